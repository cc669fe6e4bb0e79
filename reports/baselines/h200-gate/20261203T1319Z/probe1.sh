#!/bin/bash
# the loader probe as the harness builds it now, alone, on a fresh machine
export PYTHONPATH=$PWD TORCHINDUCTOR_CACHE_DIR=/tmp/ic1
nproc; g++ --version | head -1
/usr/bin/time -f "wall %e s user %U s" python3 -c "
from pathlib import Path; import tempfile, time
from harness.backends import aoti_runner as a
t=time.perf_counter(); r=a._probe_package(Path(tempfile.mkdtemp())/'p.pt2', None)
print({k:(v if k!='compile_log' else [l for l in v if 'probe' in l]) for k,v in r.items()}, round(time.perf_counter()-t,1))
" 2>&1 | tail -3
