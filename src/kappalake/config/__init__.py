"""Configuration: YAML files under conf/ validated into typed models."""

from kappalake.config.loader import Project, load_pipeline, load_project, load_target
from kappalake.config.models import GoldViewConfig, PipelineConfig, TargetConfig

__all__ = ["GoldViewConfig", "PipelineConfig", "Project", "TargetConfig", "load_pipeline", "load_project",
           "load_target"]
