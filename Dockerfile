# Unified Behavioral Segmentation API image (non-root). Build: docker build -t unified-segmentation .
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    USEG_HOST=0.0.0.0 \
    NUMBA_CACHE_DIR=/app/.numba-cache

WORKDIR /app

# dependencies first (cached layer), from the same lock CI installs
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY src ./src
# the compiled kernels are built once here (numba's on-disk cache), not by every worker at start-up
RUN pip install -c constraints.txt . \
    && useradd --create-home --uid 10001 useg \
    && mkdir -p /data "$NUMBA_CACHE_DIR" \
    && python -c "import numpy as np; from unified_segmentation.core.kernel import AxisKernel; \
k = AxisKernel(np.zeros((2, 2)) + [[0.0], [1.0]], np.stack([np.eye(2)] * 2), [0.5, 0.5]); \
k.score(np.zeros((3, 2))); k.noisy_probability(np.zeros((3, 2)), np.ones((3, 2))); \
from unified_segmentation.storage._pgcopy import warm_up; warm_up()" \
    && chown -R useg:useg /data "$NUMBA_CACHE_DIR"

COPY alembic.ini main.py ./

USER 10001
WORKDIR /data
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os,urllib.request;urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('USEG_PORT', os.environ.get('PORT', '8000')), timeout=2)"]

# migrations run at start-up (idempotent), then the server (USEG_WORKERS, USEG_PORT or PORT)
CMD ["sh", "-c", "useg db upgrade && exec useg serve"]
