python3 -m physgrad train --preset drn-xl --data-dir /work/shared/data --threads 2 --out /work/xl-run --no-progress   # cwd /work/wt-kernels (commit fb00300), started Tue Dec  1 21:02:50 UTC 2026
# resumed Tue Dec  1 21:48:02 UTC 2026 at commit b6bcbc9: python3 -m physgrad train --preset drn-xl --data-dir /work/shared/data --threads 2 --out /work/xl-run --no-progress --resume
