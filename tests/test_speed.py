"The speed rule (`faster_at`) keeps a pair exactly when the measured speed-up reaches the margin: the timing is stubbed, so the test checks the rule, not the machine"
from torch import nn
import fasterai.misc.speed as speed
from fasterai.misc.all import FC_Decomposer

def test_faster_at_follows_the_measurement(monkeypatch):
    wide = nn.Sequential(nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 64))
    seen,speedup = [],{96: 1.1, 6: 1.09}
    def timed(m, n, k, tokens, *a): seen.append((m, n, k, tokens)); return speedup[k]
    monkeypatch.setattr(speed, 'pair_speedup', timed)
    fc = FC_Decomposer(param_ratio=0.1, faster_at=4, rank_multiple=16)
    assert [(p.rank, p.reason) for p in fc.plan(wide)] == [(96, None), (None, 'not faster as a pair of rank 6 on 4 row(s)')]
    assert seen == [(2048, 2048, 96, 4), (64, 2048, 6, 4)]   # rank 101 rounded down, timed at 4 rows; 6 is below one block
    assert [p.rank for p in FC_Decomposer(param_ratio=0.1, rank_multiple=16).plan(wide)] == [96, 6]   # no rule, no timing
    assert len(seen) == 2
