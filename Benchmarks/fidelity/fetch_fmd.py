"""Fetches the FMD test set (Zhang et al., CVPR 2019: "A Poisson-Gaussian Denoising Dataset with Real
Fluorescence Microscopy Images"; MIT licence, github.com/yinhaoz/denoising-fluorescence) for the real-data
denoising harness. It is not committed: 48 noisy 8-bit 512² frames (confocal, two-photon and widefield;
BPAE cells, zebrafish, mouse brain; four noisy frames of each of 12 fields) and their ground truths (the
average of 50 frames).

The subset comes from the FM2S repository (github.com/Danielement321/FM2S, Apache-2.0), which packages
it in `data/FMD_testset/{raw,gt}`. Sources tried in order: $MOIRE_FMD_DIR (a folder holding raw/ and
gt/), a local git mirror of that repository, then `git clone` from GitHub.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

REPOSITORY = "https://github.com/Danielement321/FM2S"
SUBSET = "data/FMD_testset"
MIRRORS = ["/work/.mirror/Danielement321+FM2S/repo"]


def complete(folder):
    return all(os.path.isdir(os.path.join(folder, part)) and len(os.listdir(os.path.join(folder, part))) >= 48
               for part in ("raw", "gt"))


def from_git(git_dir, target):
    archive = subprocess.run(["git", f"--git-dir={git_dir}", "archive", "HEAD", SUBSET], capture_output=True)
    if archive.returncode != 0:
        return False
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(["tar", "-x", "-C", scratch], input=archive.stdout, check=True)
        shutil.copytree(os.path.join(scratch, SUBSET), target, dirs_exist_ok=True)
    return complete(target)


def fetch(target):
    if complete(target):
        return target
    given = os.environ.get("MOIRE_FMD_DIR")
    if given and complete(given):
        return given
    for mirror in MIRRORS:
        if os.path.isdir(mirror) and from_git(mirror, target):
            return target
    with tempfile.TemporaryDirectory() as scratch:
        clone = subprocess.run(["git", "clone", "-q", "--depth", "1", REPOSITORY, scratch], capture_output=True)
        if clone.returncode == 0:
            shutil.copytree(os.path.join(scratch, SUBSET), target, dirs_exist_ok=True)
            if complete(target):
                return target
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--to", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "FMD_testset"))
    args = parser.parse_args()
    found = fetch(args.to)
    if found is None:
        print(f"FMD test set not found: set MOIRE_FMD_DIR or allow git clone of {REPOSITORY}", file=sys.stderr)
        sys.exit(1)
    print(found)


if __name__ == "__main__":
    main()
