"""`make push` / `make pull`: `dvc push` / `dvc pull` against the default DVC remote, and when
one fails, a single line that names the problem and the fix instead of DVC's report.

    python -m zorkppo.remote push [dvc push args...]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DVC = str(Path(sys.executable).with_name("dvc"))

# (what DVC's error text contains, what it means and how to fix it); the first match wins.
FAILURES = [
    (
        ("no remote specified", "no remote is specified", "no default remote"),
        "no DVC remote is configured: `dvc remote add -d storage s3://BUCKET/PATH` and its "
        "endpoint (docs/remote.md)",
    ),
    (
        (
            "(403)",
            "Forbidden",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
            "Unable to locate credentials",
        ),
        "the remote refused the credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
        "(or `dvc remote modify --local {remote} access_key_id ...` and `secret_access_key ...`)",
    ),
    (
        ("Could not connect to the endpoint", "Connection refused", "timed out", "Name or service"),
        "cannot reach the endpoint {endpoint}: check `dvc remote modify {remote} endpointurl` "
        "and the network",
    ),
    (
        ("NoSuchBucket", "bucket does not exist", "(404)"),
        "the bucket of {url} does not exist: create it (COS console: Bucket List > Create) or "
        "fix `dvc remote modify {remote} url`",
    ),
    (
        ("missing cache files", "failed to pull data", "not found in the remote"),
        "files are missing from the remote: run `make push` on the machine that produced them",
    ),
]


def dvc_config(key: str) -> str:
    done = subprocess.run([DVC, "config", key], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def explain(stderr: str, remote: str) -> str:
    """One line for a failed push or pull: the matching FAILURES entry, else DVC's own error."""
    facts = {
        "remote": remote or "storage",
        "url": dvc_config(f"remote.{remote}.url") if remote else "?",
        "endpoint": (dvc_config(f"remote.{remote}.endpointurl") if remote else "") or "(default)",
    }
    for needles, message in FAILURES:
        if any(needle in stderr for needle in needles):
            return message.format(**facts)
    errors = [line for line in stderr.splitlines() if line.startswith("ERROR")]
    return (errors or stderr.strip().splitlines() or ["no output"])[-1]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("push", "pull"):
        print("usage: python -m zorkppo.remote push|pull [dvc args...]", file=sys.stderr)
        return 2
    done = subprocess.run([DVC, *argv], capture_output=True, text=True)
    print(done.stdout, end="")
    if done.returncode == 0:
        return 0
    remote = dvc_config("core.remote")
    print(f"error: dvc {argv[0]} failed: {explain(done.stderr, remote)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
