#!/usr/bin/env python3
"""Copies the data.pkl of every torch fixture (zip archives) in SRC into DST as fuzzer seeds.

    python3 scripts/extract_pickles.py tests/data/torch build-fuzz/corpus/pickle
"""
import os
import sys
import zipfile


def main(src, dst):
    os.makedirs(dst, exist_ok=True)
    for name in sorted(os.listdir(src)):
        path = os.path.join(src, name)
        if not zipfile.is_zipfile(path):
            continue
        try:
            with zipfile.ZipFile(path) as z:
                for record in z.namelist():
                    if record.endswith("/data.pkl"):
                        with open(os.path.join(dst, name + ".pkl"), "wb") as out:
                            out.write(z.read(record))
        except zipfile.BadZipFile:
            pass  # the hostile archives


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
