#!/usr/bin/env python3
"""Mirrors the repository into DEST (only changed files are rewritten, so make's timestamps stay
right) with the CUDA backend turned into C++ for the emulator: `k<<<grid, block, smem, stream>>>(args)`
becomes `emu::launch(k, grid, block, smem, stream, "k")(args)`, `extern __shared__ T x[];` a pointer
to the block's dynamic shared memory, *.cu files *.cpp, and grid-stride grids are capped at 3
blocks (the loops stride, so any grid is correct; few blocks keep the emulator fast).
cmake/cuda.cmake is replaced by emu/cuda.cmake. Usage: mirror.py REPO DEST"""
import os
import re
import sys

repo, dest = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
emu = os.path.join(repo, 'src/backends/cuda/emu')
# Skipped at the top of the repository only (src/data/ is source): the corpus, runs, environments,
# build trees and reports; anywhere: git and Python caches; and this emulator's own directory.
skip_top = {'runs', '.venv', 'data', 'reference', 'out', '.cache', '.device'}
skip_any = {'.git', '__pycache__'}
skip_path = {os.path.join('src', 'backends', 'cuda', 'emu')}


def kept(rel, d):
    if d in skip_any or os.path.normpath(os.path.join(rel, d)) in skip_path:
        return False
    return rel != '.' or not (d in skip_top or d.startswith('build') or d.startswith('gpu-check'))


def transform(s):
    s = re.sub(r'([A-Za-z_][\w:#]*(?:<[^<>;()]*>)?)<<<(.*?)>>>\(',
               lambda m: 'emu::launch(%s, %s, "%s")(' % (m.group(1), m.group(2), m.group(1)), s, flags=re.S)
    s = re.sub(r'extern __shared__ (\w+) (\w+)\[\];', r'\1* \2 = static_cast<\1*>(emu::dyn_smem());', s)
    return s.replace('int64_t{1} << 20', 'int64_t{3}')


wanted = set()
for root, dirs, files in os.walk(repo):
    rel = os.path.relpath(root, repo)
    dirs[:] = [d for d in dirs if kept(rel, d)]
    for f in files:
        src, dst = os.path.join(root, f), os.path.normpath(os.path.join(dest, rel, f))
        data = open(src, 'rb').read()
        if rel == os.path.join('src', 'backends', 'cuda'):
            data = transform(data.decode()).encode()
            if dst.endswith('.cu'):
                dst = dst[:-3] + '.cpp'
        if rel == 'cmake' and f == 'cuda.cmake':
            data = open(os.path.join(emu, 'cuda.cmake'), 'rb').read()
        wanted.add(dst)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.exists(dst) or open(dst, 'rb').read() != data:
            open(dst, 'wb').write(data)
cuda = os.path.join(dest, 'src/backends/cuda')
for f in os.listdir(cuda):
    p = os.path.normpath(os.path.join(cuda, f))
    if os.path.isfile(p) and p not in wanted:
        os.remove(p)
