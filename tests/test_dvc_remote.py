"""A real S3-compatible remote (moto's server on 127.0.0.1, credentials enforced): every output of
a tiny `dvc repro` goes up with `make push`'s command, the cache and outputs are deleted, and
`make pull`'s command brings them back byte for byte; bad credentials or an unreachable endpoint
end in one line that says what to fix."""

import hashlib
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import TINY_DVC_PIPELINE, copy_project, deep_merge, dvc_env, run

DVC = str(Path(sys.executable).with_name("dvc"))
BUCKET = "zork-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server with IAM auth on: three unauthenticated calls make a user, its key and
    an S3 policy; every request after that must be signed with that key."""
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={"INITIAL_NO_AUTH_ACTION_COUNT": "3", "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        boot = {"aws_access_key_id": "boot", "aws_secret_access_key": "boot"}
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", **boot)
        iam.create_user(UserName="ci")
        key = iam.create_access_key(UserName="ci")["AccessKey"]
        policy = {"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(
            UserName="ci",
            PolicyName="s3",
            PolicyDocument=json.dumps(policy | {"Version": "2012-10-17"}),
        )
        credentials = (key["AccessKeyId"], key["SecretAccessKey"])
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=credentials[0],
            aws_secret_access_key=credentials[1],
        ).create_bucket(Bucket=BUCKET)
        yield endpoint, credentials
    finally:
        server.kill()
        server.wait()


def remote(action, cwd, env, ok=True):
    return run([sys.executable, "-m", "zorkppo.remote", action], cwd, env, ok)


def add_remote(root, env, endpoint, key_id, secret):
    """As docs/remote.md shows for Tencent Cloud COS: url and endpoint committed, credentials local."""
    for args in (
        ["remote", "add", "-f", "-d", "storage", f"s3://{BUCKET}/{root.name}"],
        ["remote", "modify", "storage", "endpointurl", endpoint],
        ["remote", "modify", "--local", "storage", "access_key_id", key_id],
        ["remote", "modify", "--local", "storage", "secret_access_key", secret],
    ):
        run([DVC, *args], root, env)


def cached_outputs(root: Path) -> list[str]:
    """dvc.yaml's `outs` (metrics and plots are `cache: false`: git holds them, not the remote)."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"].values()
    outs = [out for stage in stages for out in stage.get("outs", [])]
    return sorted(
        out if isinstance(out, str) else next(iter(out))
        for out in outs
        if isinstance(out, str) or next(iter(out.values())).get("cache", True)
    )


def output_files(root: Path) -> dict[str, str]:
    """md5 of every file under every cached output in dvc.lock."""
    files = {}
    for path in cached_outputs(root):
        for file in [root / path] if (root / path).is_file() else sorted((root / path).rglob("*")):
            if file.is_file():
                files[str(file.relative_to(root))] = hashlib.md5(file.read_bytes()).hexdigest()
    return files


def test_push_delete_pull_restores_every_output(s3_server, tmp_path, rom_path):
    endpoint, (key_id, secret) = s3_server
    root = copy_project(tmp_path / "proj")
    params = yaml.safe_load((root / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(deep_merge(params, TINY_DVC_PIPELINE)))
    env = dvc_env(rom_path)
    run([DVC, "repro"], root, env)
    before = output_files(root)
    assert (
        any(p.startswith("models/ppo/") for p in before) and "data/trajectories.parquet" in before
    )

    add_remote(root, env, endpoint, key_id, secret)
    assert "secret_access_key" not in (root / ".dvc/config").read_text()  # only in config.local
    remote("push", root, env)
    shutil.rmtree(root / ".dvc/cache")
    for path in cached_outputs(root):
        target = root / path
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    assert not output_files(root)

    remote("pull", root, env)
    assert output_files(root) == before
    status = run([DVC, "status"], root, env).stdout
    assert "Data and pipelines are up to date" in status, status


def test_bad_credentials_or_endpoint_end_in_one_line(s3_server, tmp_path, rom_path):
    endpoint, (key_id, _) = s3_server
    root = tmp_path / "small"
    root.mkdir()
    env = dvc_env(rom_path)
    run(["git", "init", "-q"], root, env)
    run([DVC, "init", "-q"], root, env)
    (root / "notes.txt").write_text("artifact\n")
    run([DVC, "add", "-q", "notes.txt"], root, env)

    add_remote(root, env, endpoint, key_id, "not-the-secret")
    failed = remote("push", root, env, ok=False)
    assert failed.returncode == 1
    assert failed.stderr.count("\n") == 1, failed.stderr
    assert "refused the credentials" in failed.stderr and "AWS_SECRET_ACCESS_KEY" in failed.stderr

    closed = f"http://127.0.0.1:{free_port()}"
    run([DVC, "remote", "modify", "storage", "endpointurl", closed], root, env)
    failed = remote("push", root, env, ok=False)
    assert failed.stderr.count("\n") == 1, failed.stderr
    assert f"cannot reach the endpoint {closed}" in failed.stderr

    run([DVC, "remote", "default", "--unset"], root, env)
    failed = remote("push", root, env, ok=False)
    assert failed.returncode == 1
    assert failed.stderr.count("\n") == 1, failed.stderr
    assert "no DVC remote is configured" in failed.stderr, failed.stderr
