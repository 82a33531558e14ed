"""The API's request and response bodies (Pydantic): what /docs shows and what requests are checked against."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, computed_field


def _in_utc(moment: datetime) -> datetime:
    # The database keeps naive UTC (the same on SQLite and PostgreSQL); the API says which zone it is,
    # as the `date-time` format requires.
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


Timestamp = Annotated[datetime, AfterValidator(_in_utc)]


class ErrorOut(BaseModel):
    """Every 4xx and 5xx answer: what went wrong and what to do, or the fields that failed validation."""

    detail: str | list[dict]


BUDGET = ("Time for each training, as `smalldata train --budget`: \"90s\", \"5m\", \"1h\" or seconds "
          "(at most 24 h); 0 for the fastest (frozen backbones only). Fine-tuning is tried when its estimated "
          "cost fits. Left out: the CLI's default.")


class ProjectIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    modality: Literal["image", "text"]
    budget: str | float | None = Field(None, description=BUDGET)


class ProjectUpdate(BaseModel):
    """What a PATCH changes; what it leaves out stays."""
    name: str | None = Field(None, min_length=1, max_length=200)
    budget: str | float | None = Field(None, description=BUDGET)


class TextExample(BaseModel):
    text: str = Field(min_length=1)
    label: str = Field(min_length=1)


class TextsIn(BaseModel):
    examples: list[TextExample] = Field(min_length=1)


class Relabel(BaseModel):
    label: str = Field(min_length=1)


class PredictTexts(BaseModel):
    texts: list[str] = Field(min_length=1)
    threshold: float | None = Field(None, ge=0, le=1, description="answer 'unknown' where the top class's "
                                    "calibrated probability is below this")
    unknown: bool = Field(True, description="answer 'unknown' for inputs that look like no class seen in training "
                          "(less sure than almost every known example was on the folds)")


class RejectedOut(BaseModel):
    name: str
    reason: str


class UnlabeledTextsIn(BaseModel):
    texts: list[str] = Field(min_length=1)


class UnlabeledAdded(BaseModel):
    added: int
    n_unlabeled: int
    rejected: list[RejectedOut]


class ExampleOut(BaseModel):
    id: int
    project_id: int
    label: str
    text: str | None
    filename: str | None
    created: Timestamp


class Added(BaseModel):
    added: list[ExampleOut]
    rejected: list[RejectedOut]


class JobOut(BaseModel):
    id: int
    project_id: int
    state: str
    stage: str
    done: int
    total: int
    error: str | None
    n_examples: int
    version_id: int | None
    created: Timestamp
    started: Timestamp | None
    finished: Timestamp | None
    budget_s: float | None = Field(description="the seconds this training was given (None: made before budgets)")

    @computed_field(description="seconds since a running job started (None unless running): with budget_s, "
                                "the most time it has left")
    @property
    def elapsed_s(self) -> float | None:
        if self.state != "running" or self.started is None:
            return None
        return max(0.0, (datetime.now(timezone.utc) - self.started).total_seconds())


class AccuracyInterval(BaseModel):
    """How many examples the chosen model got right out of fold in cross-validation, and a Wilson
    interval for its accuracy: it widens as the examples get fewer (15 of 15 right: about 80-100%)."""
    correct: int
    n: int
    accuracy: float
    low: float
    high: float
    confidence: float


class Relabelled(BaseModel):
    from_label: str = Field(alias="from")
    to: str
    n: int


class VersionChanges(BaseModel):
    """What changed from the version before: the examples (matched by content: one removed and
    uploaded again is unchanged) and the accuracy."""
    previous_id: int
    previous_number: int
    examples_known: bool = Field(description="false where the version before was made before versions kept "
                                             "their examples: only the accuracies are compared")
    added: dict[str, int] = Field(description="examples added, per class")
    removed: dict[str, int] = Field(description="examples removed, per class")
    relabelled: list[Relabelled] = Field(description="examples whose class changed, per pair of classes")
    accuracy_before: AccuracyInterval | None = Field(description="the version before's cross-validated accuracy "
                                                                 "(this one's is its accuracy_interval)")


class VersionOut(BaseModel):
    id: int
    project_id: int
    number: int
    job_id: int
    active: bool
    summary: dict
    accuracy_interval: AccuracyInterval | None
    findings: dict | None
    changes: VersionChanges | None = Field(description="what changed from the version before; None for a project's "
                                                       "first version and for versions made before versions kept it")
    report_ready: bool
    created: Timestamp


class ProjectOut(BaseModel):
    id: int
    name: str
    modality: str
    created: Timestamp
    n_examples: int
    n_unlabeled: int = 0  # unlabeled examples training may learn from
    counts: dict[str, int]
    problems: list[str]
    active_version: VersionOut | None
    latest_job: JobOut | None
    budget_s: float = Field(description="the seconds each training of the project may take")
    budget_is_default: bool = Field(description="the budget is the CLI's default (none was set)")


class Prediction(BaseModel):
    label: str = Field(description="the most probable class, or 'unknown' where the input misses the cut-offs")
    unknown_because: Literal["unfamiliar", "below threshold"] | None = Field(
        None, description="why the label is 'unknown': the familiarity is under familiarity_floor (the input looks "
                          "like no class seen in training), or no class reached cut_off; null when answered")
    familiarity: float | None = Field(
        None, description="how familiar the input looks, 0 to 1: its probability and its similarity to the nearest "
                          "class, ranked among the training examples' held-out ones (0.3: more familiar than about "
                          "30% of them); null for models without one (heads on raw inputs, older models)")
    probabilities: dict[str, float] = Field(description="every class's calibrated probability, most probable first")


class Predictions(BaseModel):
    version_id: int | None
    predictions: list[Prediction]
    cut_off: float = Field(0.0, description="the calibrated probability an answer needed: the request's threshold "
                                            "(for models from before familiarity, the model's floor when higher)")
    familiarity_floor: float | None = Field(None, description="the familiarity an answer needed: the model's floor "
                                                              "for inputs of no known class; null when off or absent")
