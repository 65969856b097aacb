"""The uplift model at serving time: the chance to buy with an offer and without one.

A T-learner (streaming/uplift_training.py says why): two XGBoost boosters, one trained on offered
sessions and one on held-out ones, each taking exactly FEATURE_NAMES. They travel as one artifact,
a small JSON envelope holding both boosters as UBJSON in base64:

    {"uplift_model": 1, "learner": "t", "feature_names": [...],
     "treated": "<base64 UBJSON>", "control": "<base64 UBJSON>"}

Each booster is checked and loaded exactly as a risk model is (`streaming.scoring.load_model`:
the model-file checks, one thread a prediction, the Booster's own config), so an envelope is as
safe to load as a risk model file. Never a pickle.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Final

import numpy as np
import numpy.typing as npt
import xgboost

from streaming.features import FEATURE_NAMES
from streaming.model_file import ModelError
from streaming.scoring import Matrix, Scorer, load_model

Probabilities = npt.NDArray[np.float64]

ENVELOPE_VERSION: Final = 1
# An envelope is two boosters in base64 and a few names: far below this.
MAX_ENVELOPE_BYTES: Final = 64 * 2**20


def envelope(treated: xgboost.Booster, control: xgboost.Booster) -> bytes:
    """Both boosters of a T-learner as one artifact."""
    return json.dumps(
        {
            "uplift_model": ENVELOPE_VERSION,
            "learner": "t",
            "feature_names": list(FEATURE_NAMES),
            "treated": base64.b64encode(bytes(treated.save_raw("ubj"))).decode("ascii"),
            "control": base64.b64encode(bytes(control.save_raw("ubj"))).decode("ascii"),
        },
        separators=(",", ":"),
    ).encode()


def load_uplift_model(raw: bytes, *, label: str) -> UpliftScorer:
    """An UpliftScorer for an artifact made by `envelope`, or ModelError saying why not."""
    treated, control = booster_files(raw)
    return UpliftScorer(
        load_model(treated, label=f"{label} treated"),
        load_model(control, label=f"{label} control"),
        label=label,
    )


def booster_files(raw: bytes) -> tuple[bytes, bytes]:
    """The treated and the control booster's model files in an envelope (each to be checked as
    any model file is), or ModelError saying why the envelope is not one."""
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise ModelError(f"An uplift model is at most {MAX_ENVELOPE_BYTES} bytes.")
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelError("An uplift model is a JSON envelope; this is not JSON.") from None
    if not isinstance(document, dict) or document.get("uplift_model") != ENVELOPE_VERSION:
        raise ModelError(f"Not an uplift model envelope (version {ENVELOPE_VERSION}).")
    if document.get("learner") != "t":
        raise ModelError("Only a two-booster (T-learner) uplift model can serve.")
    if document.get("feature_names") != list(FEATURE_NAMES):
        raise ModelError("The uplift model was trained on other features than FEATURE_NAMES.")
    return _booster_bytes(document, "treated"), _booster_bytes(document, "control")


def _booster_bytes(document: dict[str, object], key: str) -> bytes:
    value = document.get(key)
    if not isinstance(value, str):
        raise ModelError(f"The uplift model has no {key} booster.")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ModelError(f"The uplift model's {key} booster is not base64.") from None


class UpliftScorer:
    """A loaded uplift model. Safe to share between threads: it only ever predicts."""

    def __init__(self, treated: Scorer, control: Scorer, *, label: str) -> None:
        self.treated = treated
        self.control = control
        self.label = label

    def __repr__(self) -> str:
        return f"UpliftScorer({self.label!r})"

    def predict(self, X: Matrix) -> tuple[Probabilities, Probabilities]:
        """(p_offer, p_none): each row's chance to buy with an offer and without one."""
        return self.treated.predict_proba(X), self.control.predict_proba(X)

    def predict_one(self, row: list[float]) -> tuple[float, float]:
        matrix = np.asarray(row, dtype=np.float32).reshape(1, -1)
        p_offer, p_none = self.predict(matrix)
        return float(p_offer[0]), float(p_none[0])
