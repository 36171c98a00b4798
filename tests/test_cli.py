"The installed `fasterai-fc` console script, run as users run it: a fastai export, calibration data, errors, the demo."
import hashlib, subprocess, sys
import pytest
from pathlib import Path
import torch
from torch import nn
from fastai.learner import Learner, load_learner
from fasterai.misc.all import *

exe = str(Path(sys.executable).parent/'fasterai-fc')
def cli(*args): return subprocess.run([exe, *map(str, args)], capture_output=True, text=True)
def digest(p): return hashlib.sha256(Path(p).read_bytes()).hexdigest()

def exported(tmp_path):
    torch.manual_seed(0)
    learn = Learner(digits_dls(), digits_net(256), loss_func=nn.CrossEntropyLoss(), path=tmp_path)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    learn.export('model.pkl')
    return tmp_path/'model.pkl',learn

def test_decompose_fastai_export_with_calibration(tmp_path):
    src,learn = exported(tmp_path)
    before = digest(src)
    torch.save([learn.dls.train.one_batch()[0] for _ in range(3)], tmp_path/'calib.pt')
    r = cli('decompose', src, tmp_path/'small.pkl', '--rank-ratio', '0.25', '--method', 'whiten', '--calib', tmp_path/'calib.pt',
            '--exclude', 'classifier.6')
    assert r.returncode == 0, r.stderr
    assert 'classifier.0' in r.stdout and 'model: ' in r.stdout and 'written to' in r.stdout, r.stdout
    small = load_learner(tmp_path/'small.pkl')
    assert [type(small.model.classifier[i]) for i in (0, 3, 6)] == [LowRankLinear, LowRankLinear, nn.Linear]
    assert small.model.classifier[0][0].out_features == 64
    assert digest(src) == before

@pytest.mark.slow
def test_errors_are_one_line_and_touch_nothing(tmp_path):
    src,_ = exported(tmp_path)
    bad = tmp_path/'corrupt.pt'
    bad.write_bytes(b'\x80\x04 not a checkpoint at all')
    (tmp_path/'taken.pt').write_bytes(b'keep me')
    cases = [(('decompose', tmp_path/'missing.pt', tmp_path/'o.pt'), 'no such file'),
             (('decompose', bad, tmp_path/'o.pt'), "can't read a model from it"),
             (('decompose', src, tmp_path/'taken.pt'), 'exists (use --force'),
             (('decompose', src, tmp_path/'o.pkl', '--energy', '1.5'), '--energy must be a number in (0, 1]'),
             (('decompose', src, tmp_path/'o.pkl', '--rank', '0'), 'rank must be a positive integer'),
             (('decompose', src, tmp_path/'o.pkl', '--refine', '2'), '--refine 2 refines block by block: set --sequential'),
             (('decompose', src, tmp_path/'o.pkl', '--weigh-outputs'), "--weigh-outputs weighs whitening's output errors: set --method whiten (not 'svd')"),
             (('decompose', src, src, '--force'), 'is the input')]
    before = {p:digest(p) for p in (src, bad, tmp_path/'taken.pt')}
    for args,msg in cases:
        r = cli(*args)
        assert r.returncode == 2 and msg in r.stderr, (args, r.stderr)
        assert 'Traceback' not in r.stderr and r.stderr.count('\n') == 1 and not r.stdout, r.stderr
    assert {p:digest(p) for p in before} == before
    assert not (tmp_path/'o.pt').exists() and not (tmp_path/'o.pkl').exists()

@pytest.mark.slow
def test_demo_runs_offline():
    r = cli('demo', '--epochs', '2', '--ratios', '0.25')
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith('Training') and any('rank_ratio 0.25, whiten_seq' in l for l in lines), r.stdout
    table = lines[lines.index(next(l for l in lines if l.split()[:2] == ['ratio', 'method'])):]
    assert [l.split()[1] for l in table[1:]] == ['original', 'svd', 'asvd', 'whiten', 'whiten_seq'], r.stdout
