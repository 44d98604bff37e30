# restarted 2026-12-07 14:18 UTC on a new machine (the 2026-12-01 run folder was gone), from a copy of the
# repository at commit 3e17252; run folder outside the repository:
nice -n 10 python3 -m physgrad train --preset drn-xl --data-dir /path/to/data --threads 2 --out <run folder> --no-progress
