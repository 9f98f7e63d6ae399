"""Augmentation runs: generation requests from a version, generator plugins, quality gates, synthetic episodes.

See docs/synthetic.md. The job (``jobs/augment.py``) runs one ``task.run_attempt`` per request on Ray
and commits the stored synthetic episodes with ``commit.commit_augmented``.
"""

from pipeline.augment.commit import commit_augmented
from pipeline.augment.generators import CallableGenerator, CallPolicy, GenerationError, Generator, load_generator
from pipeline.augment.http import GeneratorServer, HttpGenerator
from pipeline.augment.quality import GATES, QualityConfig
from pipeline.augment.reference import ReferenceGenerator
from pipeline.augment.request import GenerationRequest, GenerationResult, PlanOptions, RequestPlan, plan_requests
from pipeline.augment.task import AttemptContext, AttemptOutcome, run_attempt

__all__ = ["GATES", "AttemptContext", "AttemptOutcome", "CallPolicy", "CallableGenerator", "GenerationError",
           "GenerationRequest", "GenerationResult", "Generator", "GeneratorServer", "HttpGenerator", "PlanOptions",
           "QualityConfig", "ReferenceGenerator", "RequestPlan", "commit_augmented", "load_generator", "plan_requests",
           "run_attempt"]
