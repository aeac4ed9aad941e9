"""Dependency aliases, so route signatures read as sentences (``services: ServicesDep``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from unified_segmentation.config import Settings
from unified_segmentation.services.facade import Services

from .jobs import CalibrationJobs
from .metrics import ApiMetrics


async def get_services(request: Request) -> Services:
    return request.app.state.services


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> ApiMetrics:
    return request.app.state.metrics


async def get_jobs(request: Request) -> CalibrationJobs:
    return request.app.state.jobs


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
JobsDep = Annotated[CalibrationJobs, Depends(get_jobs)]
