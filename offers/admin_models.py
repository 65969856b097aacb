"""The model registry in the admin: upload, compare, activate, shadow, roll back, retire.

Each change to what scores decisions goes through a confirmation page (a GET that says what will
happen and, for an activation or a shadow, how the model does against the active one on
recorded outcomes; then a POST) and is written twice: to the admin's history (LogEntry, with the
user and both versions) and to the model's own timeline (ModelEvent). The models in use (active,
shadow) are never deleted: another is activated, or they are retired, first.

The uplift models have a page of their own (UpliftModel: the same rows, of the other kind):
activated through the same services as `train_model --uplift`, behind the same gate (a held-out
Qini coefficient above 0, unless the operator overrules it), rolled back and retired.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected
from django.core.exceptions import PermissionDenied
from django.db.models import ProtectedError, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from offers.bodies import MODEL_UPLOAD_BYTES
from offers.charts import Series, colour, unit_chart
from offers.evaluation import Comparison, ModelEvaluation, compare_models, feature_importance
from offers.management.commands.promote_shadow import DEFAULT_MIN_OUTCOMES
from offers.models import Decision, ScoringModel, UpliftModel
from offers.services import (
    ModelInUse,
    model_activate,
    model_create,
    model_refuse,
    model_retire,
    model_rollback,
    model_rollback_target,
    model_shadow,
    uplift_model_activate,
    uplift_model_refusal,
    uplift_model_rollback,
    uplift_model_rollback_target,
)
from streaming.evaluation import gate
from streaming.features import FEATURE_NAMES, FEATURES
from streaming.model_file import (
    MAX_DEPTH,
    MAX_NODES,
    MAX_NODES_PER_TREE,
    MAX_TREES,
    ModelError,
    check_model_file,
    sniff_format,
)
from streaming.model_trial import trial_model

MAX_MODEL_BYTES = MODEL_UPLOAD_BYTES  # what the body limit lets staff send
# The admin's pages measure models on the known outcomes of this many recent days: enough to
# judge, few enough to read while a page waits.
COMPARE_DAYS: Final = 30
MAX_COMPARED: Final = 5

ACTIVE, SHADOW, CANDIDATE, RETIRED = (
    ScoringModel.State.ACTIVE,
    ScoringModel.State.SHADOW,
    ScoringModel.State.CANDIDATE,
    ScoringModel.State.RETIRED,
)
_TEMPLATES: Final = "admin/offers/scoringmodel"


# --- measuring models on recorded outcomes -------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """Models measured on the known outcomes of the last COMPARE_DAYS: the `comparison` of those
    that could be scored (None when none could) and, by label, why the others could not."""

    comparison: Comparison | None
    errors: dict[str, str]

    def of(self, model: ScoringModel) -> ModelEvaluation | None:
        if self.comparison is None:
            return None
        return next((e for e in self.comparison.models if e.model.pk == model.pk), None)


def measure(models: Sequence[ScoringModel]) -> Measured:
    """Each model tried in a process of its own first (as an upload is), so that XGBoost reads
    a stored file here only once it has passed; then all re-scored on the same decisions."""
    errors: dict[str, str] = {}
    for model in models:
        try:
            trial_model(bytes(model.artifact))
        except ModelError as exc:
            errors[model.label] = str(exc)
    scorable = [model for model in models if model.label not in errors]
    if not scorable:
        return Measured(None, errors)
    since = timezone.now() - datetime.timedelta(days=COMPARE_DAYS)
    try:
        return Measured(compare_models(scorable, since=since), errors)
    except ModelError as exc:
        return Measured(None, errors | {model.label: str(exc) for model in scorable})


def outcomes_in_words(comparison: Comparison | None) -> str:
    if comparison is None:
        return "No model could be scored."
    if comparison.n == 0:
        return (
            f"Not enough known outcomes: no decision of the last {COMPARE_DAYS} days has a known "
            f"outcome yet (one is known {settings.OUTCOME_WINDOW_SECONDS:g} s after its decision, "
            "and only decisions without an offer measure a model)."
        )
    return (
        f"{comparison.n:,} decisions of the last {COMPARE_DAYS} days with a known outcome "
        f"(decided before {comparison.known_before:%Y-%m-%d %H:%M} UTC), "
        f"{comparison.buyers:,} of them bought."
    )


@dataclass(frozen=True)
class Verdict:
    """The gate's verdict in words: `kind` is passed, refused or unknown (nothing to judge on)."""

    kind: str
    text: str


def verdict_in_words(new: ScoringModel, current: ScoringModel | None, found: Measured) -> Verdict:
    cannot = [f"{label} cannot be scored: {why}" for label, why in found.errors.items()]
    if cannot:
        return Verdict("unknown", "; ".join(cannot) + ".")
    if current is None:
        return Verdict("unknown", "No model is active: there is nothing to compare it with.")
    if current.pk == new.pk:
        return Verdict("unknown", f"{new.label} is the active model.")
    mine, theirs = found.of(new), found.of(current)
    if mine is None or theirs is None or found.comparison is None:
        return Verdict("unknown", "The two models could not be compared.")
    verdict = gate(mine.figures, theirs.figures)
    n = found.comparison.n
    if not verdict.passed and verdict.reasons == ("no outcomes to compare the two models on",):
        return Verdict(
            "unknown",
            f"Not enough known outcomes to compare {new.label} with {current.label} "
            f"({n:,} decisions with a known outcome, {found.comparison.buyers:,} of them bought: "
            "both outcomes are needed).",
        )
    why = "; ".join(verdict.reasons)
    if verdict.passed:
        text = f"By the gate's rule {new.label} may replace {current.label}: {why}."
    else:
        text = (
            f"By the gate's rule {new.label} would not replace {current.label}: {why}. "
            "It can still be activated (as train_model --force does)."
        )
    if n < DEFAULT_MIN_OUTCOMES:
        text += (
            f" Only {n:,} known outcomes: promote_shadow waits for {DEFAULT_MIN_OUTCOMES:,} "
            "before it judges, so these figures are rough."
        )
    return Verdict("passed" if verdict.passed else "refused", text)


# (attribute, heading, whether a higher value is better)
FIGURES: Final = (
    ("roc_auc", "ROC-AUC", True),
    ("pr_auc", "PR-AUC", True),
    ("log_loss", "log-loss", False),
    ("brier", "Brier", False),
    ("ece", "ECE", False),
)


@dataclass(frozen=True)
class FigureRow:
    label: str
    role: str
    colour: str
    n: str
    buyers: str
    cells: list[tuple[str, bool]]  # (the figure, whether it is the best of those compared)
    error: str = ""


def figure_rows(models: Sequence[ScoringModel], found: Measured) -> list[FigureRow]:
    """The metrics table: a row per model, in the order given, the best of each figure marked
    when more than one model has it."""
    known = {m.pk: e.figures for m in models if (e := found.of(m)) is not None}
    best: dict[str, float] = {}
    for name, _, higher in FIGURES:
        values = [getattr(f, name) for f in known.values() if not math.isnan(getattr(f, name))]
        if len(values) > 1:
            best[name] = max(values) if higher else min(values)
    rows = []
    for index, model in enumerate(models):
        figures = known.get(model.pk)
        if figures is None:
            error = found.errors.get(model.label, "not scored")
            rows.append(
                FigureRow(model.label, _role(model), colour(index), "-", "-", [], error=error)
            )
            continue
        cells = [
            (_figure(value), name in best and value == best[name])
            for name, _, _ in FIGURES
            for value in (getattr(figures, name),)
        ]
        rows.append(
            FigureRow(
                model.label,
                _role(model),
                colour(index),
                f"{figures.n:,}",
                f"{figures.buyers:,}",
                cells,
            )
        )
    return rows


def _figure(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def _role(model: ScoringModel) -> str:
    return model.get_state_display().lower()


def compact(label: str, figures: dict[str, Any]) -> str:
    return (
        f"{label}: ROC-AUC {_figure(figures.get('roc_auc'))}, "
        f"log-loss {_figure(figures.get('log_loss'))}"
    )


def charts(models: Sequence[ScoringModel], found: Measured) -> dict[str, str]:
    """The ROC curves and the calibration plot of the models that were scored."""
    roc, calibration = [], []
    for index, model in enumerate(models):
        evaluation = found.of(model)
        if evaluation is None:
            continue
        roc.append(Series(model.label, colour(index), evaluation.roc))
        calibration.append(
            Series(
                model.label,
                colour(index),
                [(risk, share) for risk, share, _ in evaluation.calibration],
                [count for _, _, count in evaluation.calibration],
            )
        )
    return {
        "roc": unit_chart(
            roc,
            name="roc",
            title="ROC curves: abandoned carts found against bought carts flagged",
            x_label="false positive rate (bought carts flagged)",
            y_label="true positive rate (abandoned carts found)",
            diagonal="chance",
        ),
        "calibration": unit_chart(
            calibration,
            name="calibration",
            title="Calibration: the risk given against the share that abandoned",
            x_label="mean risk given (a tenth of risk each)",
            y_label="share abandoned",
            diagonal="perfectly calibrated",
        ),
    }


# --- what each model learnt from -----------------------------------------------------------------

METRIC_NAMES: Final[dict[str, str]] = {
    "auc": "held-out ROC-AUC",
    "pr_auc": "held-out PR-AUC",
    "log_loss": "held-out log-loss",
    "n_train": "training rows",
    "n_test": "held-out rows",
    "positive_rate": "share abandoned",
    "rounds": "trees",
    "features_version": "features version",
    "uploaded_by": "uploaded by",
    "qini": "held-out Qini coefficient",
    "uplift_top_30": "uplift in the top 30%",
    "offered_share": "share offered",
    "rounds_treated": "trees (offered)",
    "rounds_control": "trees (held out)",
}


def training_metrics(model: ScoringModel) -> list[tuple[str, str]]:
    """The figures a model was stored with (training's, or who uploaded it), named in words."""
    metrics: dict[str, Any] = model.metrics if isinstance(model.metrics, dict) else {}
    return [
        (METRIC_NAMES.get(name) or name, f"{value:.4f}" if isinstance(value, float) else str(value))
        for name, value in metrics.items()
        if name != "live" and not isinstance(value, dict | list)
    ]


def live_summary(label: str, live: dict[str, Any]) -> str:
    """An upload's figures on recorded outcomes (metrics["live"]) in one sentence."""
    if "error" in live:
        return f"{label} could not be scored: {live['error']}"
    if not live.get("n"):
        return (
            f"{label} has no figures on recorded outcomes yet: no decision of the last "
            f"{live.get('days', COMPARE_DAYS)} days had a known outcome when it was uploaded"
        )
    said = f"on {live['n']:,} known outcomes, {compact(label, live)}"
    active = live.get("active")
    if isinstance(active, dict):
        if "error" in active:
            said += f"; the active {active.get('model')} could not be scored: {active['error']}"
        else:
            said += f"; the active {compact(str(active.get('model')), active)}"
    if live.get("gate"):
        said += f". {live['gate']}"
    return said


@dataclass(frozen=True)
class Bar:
    feature: str
    meaning: str
    share: str
    width: float  # percent of the largest


def importance_bars(model: ScoringModel) -> tuple[list[Bar], list[str]]:
    """Each feature's share of the model's total gain, largest first, and the features it never
    splits on. ModelError when it cannot be loaded."""
    shares = feature_importance(model)
    largest = max(shares.values(), default=0.0) or 1.0
    bars = [
        Bar(name, FEATURES.get(name, ""), f"{share:.1%}", round(100 * share / largest, 1))
        for name, share in shares.items()
        if share > 0
    ]
    return bars, [name for name, share in shares.items() if share == 0]


# --- the upload form -----------------------------------------------------------------------------


class ScoringModelForm(forms.ModelForm):  # type: ignore[type-arg]  # generic only in django-stubs
    """Upload of an XGBoost model file: JSON or UBJSON, checked before anything is stored."""

    model_file = forms.FileField(
        required=False,
        help_text="An XGBoost Booster saved as JSON or UBJSON (never a pickle), trained on "
        f"the live feature list, within the limits: at most {MAX_TREES:,} trees, "
        f"{MAX_NODES_PER_TREE:,} nodes a tree and {MAX_NODES:,} in all, a depth of {MAX_DEPTH}, "
        "finite values. It is tried in a separate process before it is stored, then measured "
        f"against the active model on the known outcomes of the last {COMPARE_DAYS} days.",
    )

    class Meta:
        model = ScoringModel
        fields = ["name", "notes"]

    def clean_model_file(self) -> bytes | None:
        upload = self.cleaned_data.get("model_file")
        if self.instance.pk:
            return None  # a stored version's artifact never changes
        if upload is None:
            raise forms.ValidationError("Choose a model file to upload.")
        if upload.size > MAX_MODEL_BYTES:
            raise forms.ValidationError(f"The file is over {MAX_MODEL_BYTES // 2**20} MiB.")
        raw: bytes = upload.read()
        try:
            # The bounds and the structure here; XGBoost only ever reads the file in the trial's
            # process, never in this one.
            check_model_file(raw)
            trial_model(raw)
        except ModelError as exc:
            raise forms.ValidationError(str(exc)) from None
        return raw


# --- the registry --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    url: str
    label: str


@dataclass(frozen=True)
class Step:
    """A change a model's page links to: the page (its URL's last word), the link's words and
    the states a model may take that step from."""

    page: str
    link: str
    states: tuple[str, ...]


@dataclass(frozen=True)
class RegistryKind:
    """What the registry's pages do differently for a kind of model: the services that make one
    live, its gate, the steps a model may take, and the words (templates for str.format)."""

    activate: Callable[..., ScoringModel]
    rollback: Callable[..., ScoringModel | None]
    rollback_target: Callable[[], ScoringModel | None]
    refusal: Callable[..., str]  # why the gate keeps `model` from being activated, '' when not
    log_verdict: bool  # whether the history keeps the verdict an activation was confirmed on
    steps: tuple[Step, ...]
    pause_warning: str  # {model} {role} {trained} {live}
    activate_question: str  # {model} {replacing}
    activated: str  # an activation's message's end: what uses the model, how soon
    active_already: str  # {model}
    retire_question: str  # {model} {role}
    no_rollback: str
    rollback_to_none: str  # {target}
    rollback_question: str  # {active} {target}
    none_live: str  # {was} when none was live
    rolled_back: str  # {was} {target}

    def may(self, page: str, model: ScoringModel) -> bool:
        return any(step.page == page and model.state in step.states for step in self.steps)


def _no_gate(*, model: ScoringModel) -> str:  # noqa: ARG001  # RegistryKind.refusal's signature
    """The cart-risk model's gate refuses nothing in the admin: its verdict is shown, not applied."""
    return ""


class _RegistryAdmin(admin.ModelAdmin):  # type: ignore[type-arg]  # generic only in django-stubs
    """What the pages of both kinds of model share: their columns, the pages that activate, roll
    back and retire (with what differs in `kind`), and deletions that keep the models in use."""

    kind: ClassVar[RegistryKind]

    @admin.display(description="trained for pauses of", ordering="pause_seconds")
    def pause(self, obj: ScoringModel) -> str:
        if obj.pause_seconds is None:
            return "not known"
        if obj.pause_differs():
            return format_html(
                '<strong style="color: var(--error-fg)">⚠ {} s: the live pause is {} s</strong>',
                f"{obj.pause_seconds:g}",
                f"{settings.PAUSE_SECONDS:g}",
            )
        return f"{obj.pause_seconds:g} s"

    @admin.display(description="training metrics")
    def metrics_table(self, obj: ScoringModel) -> str:
        rows = training_metrics(obj)
        if not rows:
            return "-"
        return format_html_join("", "<div><b>{}</b>: {}</div>", rows)

    @admin.display(description="timeline")
    def timeline(self, obj: ScoringModel) -> str:
        events = list(obj.events.all()[:200])
        if not events:
            return "-"
        rows = (
            (
                f"{timezone.localtime(event.at):%Y-%m-%d %H:%M:%S}",
                event.user or "a command",
                event.get_action_display(),
                event.previous or "-",
                event.note,
            )
            for event in events
        )
        return format_html(
            '<table class="lo-timeline"><thead><tr><th>when ({})</th><th>who</th><th>what</th>'
            "<th>in place of</th><th>note</th></tr></thead><tbody>{}</tbody></table>",
            settings.TIME_ZONE,
            format_html_join(
                "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows
            ),
        )

    def _url(self, page: str, model: ScoringModel | None = None) -> str:
        name = f"admin:{self.opts.app_label}_{self.opts.model_name}_{page}"
        return reverse(name, args=[] if model is None else [model.pk])

    def _page(
        self, request: HttpRequest, template: str, title: str, **context: Any
    ) -> TemplateResponse:
        return TemplateResponse(
            request,
            f"{_TEMPLATES}/{template}",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": title,
                "changelist_url": reverse(
                    f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist"
                ),
                **context,
            },
        )

    def _editable(self, request: HttpRequest, pk: int) -> ScoringModel:
        model: ScoringModel = get_object_or_404(self.model._default_manager, pk=pk)
        if not self.has_change_permission(request, model):
            raise PermissionDenied
        return model

    def _change_url(self, model: ScoringModel) -> str:
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[model.pk]
        )

    def _changed_since(self, request: HttpRequest, field: str, now: ScoringModel | None) -> bool:
        """Whether the registry changed between the confirmation page and its POST: the page's
        `field` names the model then in that role."""
        if request.POST.get(field, "") == (now.label if now is not None else ""):
            return False
        self.message_user(
            request,
            "The registry changed since that page was shown: look again before confirming.",
            messages.WARNING,
        )
        return True

    def _to_page(
        self, request: HttpRequest, queryset: QuerySet[ScoringModel], page: str, what: str
    ) -> HttpResponse | None:
        """An action's way to the confirmation page `page` of the one model selected."""
        if queryset.count() != 1:
            self.message_user(request, f"Select exactly one model to {what}.", messages.ERROR)
            return None
        return redirect(self._url(page, queryset.get()))

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions: dict[str, Any] = super().get_actions(request)
        if "delete_selected" in actions:
            actions["delete_selected"] = (
                _delete_unused,
                "delete_selected",
                "Delete selected models (retired ones no decision refers to)",
            )
        return actions

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: Any = None
    ) -> HttpResponse:
        found = self.model._default_manager.filter(pk=object_id) if object_id.isdigit() else None
        model = None if found is None else found.first()
        if model is not None and (why := _kept(model)):
            self.message_user(request, why, messages.ERROR)
            return redirect(self._change_url(model))
        try:
            return super().delete_view(request, object_id, extra_context)
        except ProtectedError:
            # a decision written since the check above
            assert model is not None
            self.message_user(request, _kept(model) or _referred(model, 1), messages.ERROR)
            return redirect(self._change_url(model))

    def _retire(self, request: HttpRequest, models: list[ScoringModel]) -> None:
        """Retire `models`, none of them when one is active."""
        active = [model for model in models if model.state == ACTIVE]
        if active:
            self.message_user(request, _kept_in_use(active[0]), messages.ERROR)
            return
        retired = []
        for model in models:
            was = _role(model)
            try:
                done = model_retire(
                    model=model, user=request.user.get_username(), note="retired in the admin"
                )
            except ModelInUse as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            if done:
                self.log_change(request, model, f"Retired (was {was})")
                retired.append(model.label)
        if retired:
            self.message_user(
                request, f"Retired: {', '.join(retired)}. They score nothing now.", messages.SUCCESS
            )
        elif models:
            self.message_user(request, "Nothing to retire: retired already.", messages.INFO)

    def _warn_of_pauses(self, request: HttpRequest, models: Iterable[ScoringModel]) -> None:
        """A warning for each model trained for another pause than the live one: its figures
        are those of pauses of another length."""
        for model in models:
            if model.pause_differs():
                self.message_user(
                    request,
                    self.kind.pause_warning.format(
                        model=model.label,
                        role=_role(model),
                        trained=model.pause_seconds,
                        live=settings.PAUSE_SECONDS,
                    ),
                    messages.WARNING,
                )

    # --- pages

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        named = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            *(
                path(route, view(page), name=f"{named}_{name}")
                for route, name, page in self._pages()
            ),
            *super().get_urls(),
        ]

    def _pages(self) -> list[tuple[str, str, Callable[..., HttpResponse]]]:
        """The registry's own pages: (route, name, view)."""
        return [
            ("rollback/", "rollback", self.rollback_view),
            ("<int:pk>/activate/", "activate", self.activate_view),
            ("<int:pk>/retire/", "retire", self.retire_view),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        links = self._listing(request) if request.method == "GET" else []
        return super().changelist_view(request, {**(extra_context or {}), "model_links": links})

    def _listing(self, request: HttpRequest) -> list[Link]:
        """The list's links (and, in a kind's own, its warnings)."""
        target = self.kind.rollback_target()
        if target is None or not self.has_change_permission(request):
            return []
        return [Link(self._url("rollback"), f"Roll back to {target.label}…")]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        links: list[Link] = []
        found = self.model._default_manager.filter(pk=object_id) if object_id.isdigit() else None
        model: ScoringModel | None = None if found is None else found.first()
        if request.method == "GET" and model is not None:
            self._warn_of_pauses(request, [model])
            links = self._links(request, model)
        return super().change_view(
            request, object_id, form_url, {**(extra_context or {}), "model_links": links}
        )

    def _links(self, request: HttpRequest, model: ScoringModel) -> list[Link]:
        if not self.has_change_permission(request, model):
            return []
        return [
            Link(self._url(step.page, model), step.link)
            for step in self.kind.steps
            if model.state in step.states
        ]

    def _confirm(
        self,
        request: HttpRequest,
        model: ScoringModel | None,
        *,
        title: str,
        question: str,
        button: str,
        hidden: dict[str, str],
        possible: bool,
        refusal: str,
        compared_with: ScoringModel | None = None,
        judged: bool = False,
    ) -> TemplateResponse:
        """The confirmation page; `judged`: with what the gate says of `model` beside
        `compared_with` (the active model, if any)."""
        return self._page(
            request,
            "confirm.html",
            title,
            model=model,
            question=question,
            button=button,
            hidden=hidden,
            possible=possible,
            refusal=refusal,
            cancel_url=self._change_url(model) if model is not None else "",
            **self._confirm_context(model, compared_with, judged=judged and possible),
        )

    def _confirm_context(
        self, model: ScoringModel | None, compared_with: ScoringModel | None, *, judged: bool
    ) -> dict[str, Any]:
        """What a kind's confirmation pages show besides the question (the template's names);
        `judged`: the gate's verdict too."""
        raise NotImplementedError

    def activate_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        model = self._editable(request, pk)
        active = self.model._default_manager.filter(state=ACTIVE).first()
        possible = self.kind.may("activate", model)
        if request.method == "POST" and possible:
            here = self._url("activate", model)
            if self._changed_since(request, "replacing", active):
                return redirect(here)
            user = request.user.get_username()
            seen = request.POST.get("verdict", "")[:500]
            refusal = self.kind.refusal(model=model)  # only the uplift gate refuses
            if refusal and request.POST.get("force") != "1":
                model_refuse(
                    model=model,
                    note=f"{refusal} (asked in the admin)",
                    compared_with="" if active is None else active.label,
                    user=user,
                )
                self.message_user(
                    request,
                    f"{model.label} was not activated: {refusal}. Tick Activate it anyway to "
                    "overrule the gate (as train_model --uplift --force does).",
                    messages.ERROR,
                )
                return redirect(here)
            note = (
                f"activated in the admin, overruling the gate: {refusal}"
                if refusal
                else _note("activated in the admin", seen)
            )
            try:
                self.kind.activate(model=model, user=user, note=note)
            except ModelError as exc:
                self.message_user(
                    request, f"Could not activate {model.label}: {exc}", messages.ERROR
                )
                return redirect(self._change_url(model))
            was = "" if active is None else active.label
            said = "overruling the gate" if refusal else seen if self.kind.log_verdict else ""
            self.log_change(request, model, _change("Activated", was, model.label, said))
            if active is not None:
                self.log_change(request, active, f"Retired: replaced by {model.label} (activated)")
            self.message_user(
                request,
                f"Activated {model.label}"
                + ("" if active is None else f" in place of {active.label}")
                + f": {self.kind.activated}.",
                messages.SUCCESS,
            )
            return redirect(self._url("changelist"))
        replacing = "" if active is None else f" in place of {active.label}"
        return self._confirm(
            request,
            model,
            title=f"Activate {model.label}?",
            question=self.kind.activate_question.format(model=model.label, replacing=replacing),
            button=f"Yes, activate {model.label}",
            hidden={"replacing": "" if active is None else active.label},
            possible=possible,
            refusal=self.kind.active_already.format(model=model.label),
            compared_with=active,
            judged=True,
        )

    def retire_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        model = self._editable(request, pk)
        possible = self.kind.may("retire", model)
        if request.method == "POST" and possible:
            self._retire(request, [model])
            return redirect(self._url("changelist"))
        return self._confirm(
            request,
            model,
            title=f"Retire {model.label}?",
            question=self.kind.retire_question.format(model=model.label, role=_role(model)),
            button=f"Yes, retire {model.label}",
            hidden={},
            possible=possible,
            refusal=_kept_in_use(model) or f"{model.label} is retired already.",
        )

    def rollback_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_change_permission(request):
            raise PermissionDenied
        active = self.model._default_manager.filter(state=ACTIVE).first()
        target = self.kind.rollback_target()
        if request.method == "POST" and target is not None:
            if self._changed_since(request, "from", active) or self._changed_since(
                request, "to", target
            ):
                return redirect(self._url("rollback"))
            try:
                self.kind.rollback(user=request.user.get_username())
            except ModelError as exc:
                self.message_user(request, f"Not rolled back: {exc}", messages.ERROR)
                return redirect(self._url("changelist"))
            was = "" if active is None else active.label
            self.log_change(request, target, _change("Rolled back", was, target.label, ""))
            if active is not None:
                self.log_change(
                    request, active, f"Retired: rolled back from {active.label} to {target.label}"
                )
            self.message_user(
                request,
                self.kind.rolled_back.format(was=was or self.kind.none_live, target=target.label),
                messages.SUCCESS,
            )
            return redirect(self._url("changelist"))
        if target is None:
            question = self.kind.no_rollback
        elif active is None:
            question = self.kind.rollback_to_none.format(target=target.label)
        else:
            question = self.kind.rollback_question.format(active=active.label, target=target.label)
        return self._confirm(
            request,
            target,
            title="Roll back?" if target is None else f"Roll back to {target.label}?",
            question=question,
            button="" if target is None else f"Yes, roll back to {target.label}",
            hidden={
                "from": "" if active is None else active.label,
                "to": "" if target is None else target.label,
            },
            possible=target is not None,
            refusal=question,
        )


@admin.register(ScoringModel)
class ScoringModelAdmin(_RegistryAdmin):
    form = ScoringModelForm
    list_display = ["label", "state", "auc", "pause", "created_at", "activated_at"]
    list_filter = ["state", "name"]
    readonly_fields = [
        "version",
        "state",
        "pause",
        "created_at",
        "activated_at",
        "metrics_table",
        "live_figures",
        "timeline",
        "artifact_format",
        "feature_names",
    ]
    actions = ["activate", "run_as_shadow", "retire", "compare"]
    kind = RegistryKind(
        activate=model_activate,
        rollback=model_rollback,
        rollback_target=model_rollback_target,
        refusal=_no_gate,
        log_verdict=True,
        steps=(
            Step("activate", "Activate…", (CANDIDATE, SHADOW, RETIRED)),
            Step("shadow", "Put in shadow…", (CANDIDATE, RETIRED)),
            Step("unshadow", "Take out of shadow…", (SHADOW,)),
            Step("retire", "Retire…", (CANDIDATE, SHADOW)),
        ),
        pause_warning="Model {model} ({role}) was trained for pauses of {trained:g} s, but "
        "PAUSE_SECONDS is {live:g} s: its risks are those of pauses of another length. Train a "
        "model for the live pause (manage.py train_model), or set PAUSE_SECONDS back.",
        activate_question="{model} will score every decision{replacing}, on every server within "
        "2 s; the model it replaces is retired (roll back brings it back).",
        activated="every server scores with it within 2 s",
        active_already="{model} is the active model already.",
        retire_question="{model} ({role}) is retired: it scores nothing, stays in the registry "
        "with its figures and timeline, can be put in shadow or activated again, and can be "
        "deleted once no decision refers to it.",
        no_rollback="There is no earlier active model to roll back to.",
        rollback_to_none="No model is active: {target}, the last one active, is activated.",
        rollback_question="Roll back from {active} to {target}: {target} scores every decision "
        "again, on every server within 2 s, and {active} is retired.",
        none_live="no active model",
        rolled_back="Rolled back from {was} to {target}: {target} is active again.",
    )

    # --- columns and fields

    @admin.display(description="ROC-AUC")
    def auc(self, obj: ScoringModel) -> str:
        metrics = obj.metrics if isinstance(obj.metrics, dict) else {}
        value = metrics.get("auc")
        if isinstance(value, int | float):
            return f"{value:.3f} held out"
        live = metrics.get("live")
        value = live.get("roc_auc") if isinstance(live, dict) else None
        return f"{value:.3f} live, at upload" if isinstance(value, int | float) else "-"

    @admin.display(description="on recorded outcomes, at upload")
    def live_figures(self, obj: ScoringModel) -> str:
        live = obj.metrics.get("live") if isinstance(obj.metrics, dict) else None
        if not isinstance(live, dict):
            return "-"
        rows = [(obj.label, live)]
        if isinstance(live.get("active"), dict) and "error" not in live["active"]:
            rows.append((f"{live['active'].get('model')} (then active)", live["active"]))
        table = format_html(
            "<table><tr><th>model</th><th>decisions</th><th>buyers</th>{}</tr>{}</table>",
            format_html_join("", "<th>{}</th>", ((heading,) for _, heading, _ in FIGURES)),
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td>{}</tr>",
                (
                    (
                        label,
                        figures.get("n", "-"),
                        figures.get("buyers", "-"),
                        format_html_join(
                            "",
                            "<td>{}</td>",
                            ((_figure(figures.get(name)),) for name, _, _ in FIGURES),
                        ),
                    )
                    for label, figures in rows
                ),
            ),
        )
        return format_html("<p>{}</p>{}", live_summary(obj.label, live), table)

    def get_fields(self, _request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["name", "notes", "model_file"]
        uploaded = isinstance(obj.metrics, dict) and "live" in obj.metrics
        return [
            "name",
            "notes",
            *(f for f in self.readonly_fields if uploaded or f != "live_figures"),
        ]

    # --- pages

    def _pages(self) -> list[tuple[str, str, Callable[..., HttpResponse]]]:
        return [
            ("compare/", "compare", self.compare_view),
            *super()._pages(),
            ("<int:pk>/shadow/", "shadow", self.shadow_view),
            ("<int:pk>/unshadow/", "unshadow", self.unshadow_view),
        ]

    def _listing(self, request: HttpRequest) -> list[Link]:
        in_use = ScoringModel.objects.filter(state__in=[ACTIVE, SHADOW])
        self._warn_of_pauses(request, in_use)
        links = super()._listing(request)
        shadow = next((m for m in in_use if m.state == SHADOW), None)
        if shadow is not None and self.has_change_permission(request):
            links.append(Link(self._url("unshadow", shadow), f"Take {shadow.label} out of shadow…"))
        return links

    def _links(self, request: HttpRequest, model: ScoringModel) -> list[Link]:
        active = ScoringModel.objects.filter(state=ACTIVE).exclude(pk=model.pk).first()
        with_active = [model.pk] if active is None else [model.pk, active.pk]
        label = "Figures on recorded outcomes" if active is None else f"Compare with {active.label}"
        compare = f"{self._url('compare')}?ids={','.join(map(str, with_active))}"
        return [*super()._links(request, model), Link(compare, label)]

    def _confirm_context(
        self, model: ScoringModel | None, compared_with: ScoringModel | None, *, judged: bool
    ) -> dict[str, Any]:
        """The pause warnings of the models shown and, `judged`, the model's figures on recorded
        outcomes beside those of `compared_with`, and the gate's verdict."""
        context: dict[str, Any] = {}
        if model is not None and judged:
            both = [model]
            if compared_with is not None and compared_with.pk != model.pk:
                both.append(compared_with)
            found = measure(both)
            context = {
                "rows": figure_rows(both, found),
                "outcomes": outcomes_in_words(found.comparison),
                "verdict": verdict_in_words(model, compared_with, found),
            }
        shown = [m for m in (model, compared_with) if m is not None]
        return {
            "warnings": [w for m in shown if (w := m.pause_warning(settings.PAUSE_SECONDS))],
            **context,
        }

    def shadow_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        model = self._editable(request, pk)
        shadow = ScoringModel.objects.filter(state=SHADOW).first()
        active = ScoringModel.objects.filter(state=ACTIVE).first()
        possible = self.kind.may("shadow", model)
        if request.method == "POST" and possible:
            if self._changed_since(request, "replacing", shadow):
                return redirect(self._url("shadow", model))
            user = request.user.get_username()
            seen = request.POST.get("verdict", "")[:500]
            try:
                model_shadow(model=model, user=user, note=_note("put in shadow in the admin", seen))
            except ModelError as exc:
                self.message_user(
                    request, f"Could not put {model.label} in shadow: {exc}", messages.ERROR
                )
                return redirect(self._change_url(model))
            was = "" if shadow is None else shadow.label
            self.log_change(request, model, _change("Put in shadow", was, model.label, seen))
            if shadow is not None:
                self.log_change(
                    request, shadow, f"Taken out of shadow (retired): replaced by {model.label}"
                )
            self.message_user(
                request,
                f"Put {model.label} in shadow: it is scored and recorded beside the active "
                "model on every decision, never acted on.",
                messages.SUCCESS,
            )
            return redirect(self._url("changelist"))
        replacing = "" if shadow is None else f" It takes the place of {shadow.label}, retired."
        return self._confirm(
            request,
            model,
            title=f"Put {model.label} in shadow?",
            question=(
                f"{model.label} will be scored and recorded beside the active model on every "
                f"decision, never acted on, from within 2 s.{replacing}"
            ),
            button=f"Yes, run {model.label} in shadow",
            hidden={"replacing": "" if shadow is None else shadow.label},
            possible=possible,
            refusal=f"{model.label} is {_role(model)}: only a candidate or a retired model is "
            "put in shadow.",
            compared_with=active,
            judged=True,
        )

    def unshadow_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        model = self._editable(request, pk)
        possible = self.kind.may("unshadow", model)
        if request.method == "POST" and possible:
            model_shadow(
                model=None,
                user=request.user.get_username(),
                note="taken out of shadow in the admin",
            )
            self.log_change(
                request, model, f"Taken out of shadow (retired): {model.label} to no shadow"
            )
            self.message_user(request, "No model runs in shadow now.", messages.SUCCESS)
            return redirect(self._url("changelist"))
        return self._confirm(
            request,
            model,
            title=f"Take {model.label} out of shadow?",
            question=f"{model.label} stops being scored beside the active model and is retired; "
            "no model runs in shadow until another is put there.",
            button=f"Yes, take {model.label} out of shadow",
            hidden={},
            possible=possible,
            refusal=f"{model.label} is not in shadow.",
        )

    def compare_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        asked = [part for part in request.GET.get("ids", "").split(",") if part.strip()]
        ids = {int(part) for part in asked if part.strip().isdigit()}
        models = list(ScoringModel.objects.filter(pk__in=ids))
        if not 1 <= len(asked) <= MAX_COMPARED or len(models) != len(asked):
            self.message_user(
                request,
                f"Select from 1 to {MAX_COMPARED} models to compare (that exist).",
                messages.ERROR,
            )
            return redirect(self._url("changelist"))
        order: dict[str, int] = {ACTIVE: 0, SHADOW: 1, CANDIDATE: 2, RETIRED: 3}
        models.sort(key=lambda m: (order.get(m.state, 4), -m.version))
        found = measure(models)
        cards = []
        for index, model in enumerate(models):
            bars: list[Bar] = []
            unused: list[str] = []
            error = found.errors.get(model.label, "")
            if not error:
                try:
                    bars, unused = importance_bars(model)
                except ModelError as exc:
                    error = str(exc)
            live = model.metrics.get("live") if isinstance(model.metrics, dict) else None
            cards.append(
                {
                    "model": model,
                    "role": _role(model),
                    "colour": colour(index),
                    "training": training_metrics(model),
                    "live": live_summary(model.label, live) if isinstance(live, dict) else "",
                    "bars": bars,
                    "unused": unused,
                    "error": error,
                    "warning": model.pause_warning(settings.PAUSE_SECONDS),
                    "pause": "not known"
                    if model.pause_seconds is None
                    else f"{model.pause_seconds:g} s",
                    "url": self._change_url(model),
                }
            )
        scored = found.comparison is not None and found.comparison.n > 0
        return self._page(
            request,
            "compare.html",
            "Compare models: " + ", ".join(m.label for m in models),
            rows=figure_rows(models, found),
            outcomes=outcomes_in_words(found.comparison),
            scored=scored,
            charts=charts(models, found) if scored else None,
            cards=cards,
            features=len(FEATURE_NAMES),
        )

    # --- actions

    @admin.action(
        description="Activate the selected model (after a confirmation)", permissions=["change"]
    )
    def activate(self, request: HttpRequest, queryset: QuerySet[ScoringModel]) -> Any:
        return self._to_page(request, queryset, "activate", "activate")

    @admin.action(
        description="Run the selected model in shadow (after a confirmation)",
        permissions=["change"],
    )
    def run_as_shadow(self, request: HttpRequest, queryset: QuerySet[ScoringModel]) -> Any:
        return self._to_page(request, queryset, "shadow", "put in shadow")

    @admin.action(description="Retire the selected candidates and shadow", permissions=["change"])
    def retire(self, request: HttpRequest, queryset: QuerySet[ScoringModel]) -> None:
        self._retire(request, list(queryset))

    @admin.action(description="Compare selected models", permissions=["view"])
    def compare(self, request: HttpRequest, queryset: QuerySet[ScoringModel]) -> Any:
        ids = list(queryset.values_list("pk", flat=True))
        if len(ids) > MAX_COMPARED:
            self.message_user(
                request, f"Select at most {MAX_COMPARED} models to compare.", messages.ERROR
            )
            return None
        return redirect(f"{self._url('compare')}?ids={','.join(map(str, ids))}")

    # --- uploads and deletions

    def save_model(self, request: HttpRequest, obj: ScoringModel, form: Any, change: bool) -> None:
        if change:
            obj.save(update_fields=["name", "notes"])
            return
        raw = form.cleaned_data["model_file"]
        user = request.user.get_username()
        created = model_create(
            artifact=raw,
            artifact_format=sniff_format(raw),
            feature_names=list(FEATURE_NAMES),
            metrics={"uploaded_by": user},
            name=obj.name,
            notes=obj.notes,
            user=user,
        )
        live = evaluate_upload(created)
        ScoringModel.objects.filter(pk=created.pk).update(metrics={**created.metrics, "live": live})
        obj.pk, obj.version = created.pk, created.version
        obj.refresh_from_db()
        self.message_user(
            request,
            f"Uploaded {created.label} as a candidate; {live_summary(created.label, live)}.",
            messages.INFO,
        )

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:  # noqa: ARG002  # ModelAdmin's signature
        live = obj.metrics.get("live") if isinstance(obj.metrics, dict) else None
        said = f"Uploaded {obj.label} as a candidate"
        if isinstance(live, dict):
            said += f"; {live_summary(obj.label, live)}"
        return super().log_addition(request, obj, said)


def _delete_unused(
    modeladmin: _RegistryAdmin, request: HttpRequest, queryset: QuerySet[ScoringModel]
) -> HttpResponse | None:
    """Django's delete action, for the models that may go: none of it when any must stay."""
    kept = [why for model in queryset if (why := _kept(model))]
    if kept:
        for why in kept:
            modeladmin.message_user(request, why, messages.ERROR)
        modeladmin.message_user(request, "Nothing was deleted.", messages.ERROR)
        return None
    try:
        response: HttpResponse | None = delete_selected(modeladmin, request, queryset)
    except ProtectedError:
        modeladmin.message_user(
            request,
            "Nothing was deleted: a decision now refers to one of them (retire it instead).",
            messages.ERROR,
        )
        return None
    return response


def _kept_in_use(model: ScoringModel) -> str:
    if model.state == ACTIVE:
        active = "active uplift model" if model.kind == ScoringModel.Kind.UPLIFT else "active model"
        return (
            f"{model.label} is the {active}: activate another or roll back first; "
            "retired models can be deleted"
        )
    if model.state == SHADOW:
        return (
            f"{model.label} is the shadow model: take it out of shadow or retire it first; "
            "retired models can be deleted"
        )
    return ""


def _referred(model: ScoringModel, decisions: int) -> str:
    return (
        f"{model.label} scored {decisions:,} recorded decision{'s' if decisions != 1 else ''}: "
        "they refer to it, so it is kept (retired, it scores nothing)"
    )


def _kept(model: ScoringModel) -> str:
    """Why `model` may not be deleted ('' when it may)."""
    if why := _kept_in_use(model):
        return why
    decisions = Decision.objects.filter(model=model).count()
    return _referred(model, decisions) if decisions else ""


def _note(what: str, seen: str) -> str:
    return f"{what}; shown: {seen}" if seen else what


def _change(what: str, was: str, now: str, seen: str) -> str:
    said = f"{what}: from {was} to {now}" if was else f"{what}: {now} (none before)"
    return f"{said}. {seen}" if seen else said


def evaluate_upload(model: ScoringModel) -> dict[str, Any]:
    """An upload's figures on the known outcomes of the last COMPARE_DAYS, beside the active
    model's on the same decisions, and the gate's verdict: what metrics["live"] keeps."""
    active = ScoringModel.objects.filter(state=ACTIVE).exclude(pk=model.pk).first()
    found = measure([model] if active is None else [model, active])
    live: dict[str, Any] = {"days": COMPARE_DAYS, "at": timezone.now().isoformat()}
    mine = found.of(model)
    if mine is None:
        live["error"] = found.errors.get(model.label, "not scored")
        return live
    live.update(mine.figures.as_dict())
    if active is not None:
        theirs = found.of(active)
        if theirs is None:
            live["active"] = {"model": active.label, "error": found.errors.get(active.label, "")}
        else:
            live["active"] = {"model": active.label, **theirs.figures.as_dict()}
        if mine.figures.n:
            live["gate"] = verdict_in_words(model, active, found).text
    return live


# --- the uplift models ---------------------------------------------------------------------------


def uplift_verdict(model: ScoringModel) -> Verdict:
    """The uplift gate's verdict in words (`uplift_model_refusal` is its rule)."""
    refusal = uplift_model_refusal(model=model)
    if refusal:
        return Verdict(
            "refused",
            f"By the gate's rule {model.label} would not be activated: {refusal}. It can still "
            "be activated, by ticking Activate it anyway (as train_model --uplift --force does).",
        )
    metrics: dict[str, Any] = model.metrics if isinstance(model.metrics, dict) else {}
    held_out = metrics.get("n_test")
    on = f" on {held_out:,} held-out randomised decisions" if isinstance(held_out, int) else ""
    return Verdict(
        "passed",
        f"By the gate's rule {model.label} may be activated: its Qini coefficient{on} is "
        f"{metrics['qini']:.3f}, above 0 (it finds the shoppers an offer sways better than "
        "offering at random).",
    )


def _metric(model: ScoringModel, name: str) -> Any:
    return model.metrics.get(name) if isinstance(model.metrics, dict) else None


@admin.register(UpliftModel)
class UpliftModelAdmin(_RegistryAdmin):
    """The uplift models (trained by `train_model --uplift`): their held-out figures, the live
    one marked, and activation, roll back and retirement, each after a confirmation.

    Rights on scoring models are rights on uplift models: one registry."""

    change_list_template = f"{_TEMPLATES}/change_list.html"
    change_form_template = f"{_TEMPLATES}/change_form.html"
    list_display = [
        "label",
        "role",
        "qini",
        "uplift_top_30",
        "rows",
        "pause",
        "created_at",
        "activated_at",
    ]
    list_filter = ["state"]
    readonly_fields = [
        "version",
        "role",
        "gate",
        "pause",
        "created_at",
        "activated_at",
        "metrics_table",
        "timeline",
    ]
    fields = ["notes", *readonly_fields]
    actions = ["activate", "retire"]
    kind = RegistryKind(
        activate=uplift_model_activate,
        rollback=uplift_model_rollback,
        rollback_target=uplift_model_rollback_target,
        refusal=uplift_model_refusal,
        log_verdict=False,
        steps=(
            Step("activate", "Activate…", (CANDIDATE, SHADOW, RETIRED)),
            Step("retire", "Retire…", (CANDIDATE,)),
        ),
        pause_warning="{model} was trained on {trained:g} s pauses but PAUSE_SECONDS is "
        "{live:g}: its chances are those of pauses of another length; train one for {live:g} s "
        "(manage.py train_model --uplift)",
        activate_question="{model} will give the chances to buy with an offer and without for "
        "every rule that targets by uplift{replacing}, on every worker within 2 s; the model it "
        "replaces is retired (roll back brings it back).",
        activated="every worker targets by uplift with it within 2 s",
        active_already="{model} is the live uplift model already.",
        retire_question="{model} (a candidate) is retired: it stays in the registry with its "
        "figures and timeline, can be activated again, and can be deleted.",
        no_rollback="There is no earlier uplift model to roll back to.",
        rollback_to_none="No uplift model is live: {target}, the last one live, is activated.",
        rollback_question="Roll back from {active} to {target}: {target} gives the chances for "
        "every rule that targets by uplift again, on every worker within 2 s, and {active} is "
        "retired.",
        none_live="no live uplift model",
        rolled_back="Rolled back from {was} to {target}: {target} is the live uplift model again.",
    )

    # --- rights

    def _may(self, request: HttpRequest, action: str) -> bool:
        return any(
            request.user.has_perm(f"offers.{action}_{name}")
            for name in ("scoringmodel", "upliftmodel")
        )

    def has_add_permission(self, request: HttpRequest) -> bool:  # noqa: ARG002  # ModelAdmin's signature
        return False  # trained by train_model --uplift, never uploaded

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:  # noqa: ARG002  # ModelAdmin's signature
        return self._may(request, "view") or self._may(request, "change")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:  # noqa: ARG002  # ModelAdmin's signature
        return self._may(request, "change")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:  # noqa: ARG002  # ModelAdmin's signature
        return self._may(request, "delete")

    # --- columns and fields

    @admin.display(description="role", ordering="state")
    def role(self, obj: ScoringModel) -> str:
        if obj.state == ACTIVE:
            return format_html(
                "<strong data-live-uplift>● {}</strong>: {}",
                "live",
                "the rules that target by uplift use it",
            )
        return obj.get_state_display()

    @admin.display(description="Qini (held out)")
    def qini(self, obj: ScoringModel) -> str:
        value = _metric(obj, "qini")
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "-"
        if value <= 0:
            return format_html(
                '<span class="lo-warning" title="the gate needs above 0">{}</span>',
                f"{value:.3f}",
            )
        return f"{value:.3f}"

    @admin.display(description="uplift in the top 30%")
    def uplift_top_30(self, obj: ScoringModel) -> str:
        value = _metric(obj, "uplift_top_30")
        return f"{value:+.3f}" if isinstance(value, int | float) else "-"

    @admin.display(description="decisions (trained / held out)")
    def rows(self, obj: ScoringModel) -> str:
        trained, held_out = _metric(obj, "n_train"), _metric(obj, "n_test")
        if not isinstance(trained, int) or not isinstance(held_out, int):
            return "-"
        return f"{trained:,} / {held_out:,}"

    @admin.display(description="the gate")
    def gate(self, obj: ScoringModel) -> str:
        verdict = uplift_verdict(obj)
        return format_html(
            '<span class="lo-verdict {}" data-verdict="{}">{}</span>',
            verdict.kind,
            verdict.kind,
            verdict.text,
        )

    # --- pages

    def _listing(self, request: HttpRequest) -> list[Link]:
        if not UpliftModel.objects.filter(state=ACTIVE).exists():
            self.message_user(
                request,
                "No uplift model is live: the rules that target by uplift offer nothing. "
                "Activate one (trained by manage.py train_model --uplift).",
                messages.WARNING,
            )
        return super()._listing(request)

    def _confirm_context(
        self,
        model: ScoringModel | None,
        compared_with: ScoringModel | None,  # noqa: ARG002  # the uplift gate compares with none
        *,
        judged: bool,
    ) -> dict[str, Any]:
        """The uplift gate's verdict and, when it refuses, the box that overrules it."""
        if model is None or not judged:
            return {}
        verdict = uplift_verdict(model)
        force = "Activate it anyway, overruling the gate" if verdict.kind == "refused" else ""
        return {"verdict": verdict, "force": force}

    # --- actions

    @admin.action(
        description="Activate the selected uplift model (after a confirmation)",
        permissions=["change"],
    )
    def activate(self, request: HttpRequest, queryset: QuerySet[ScoringModel]) -> Any:
        return self._to_page(request, queryset, "activate", "activate")

    @admin.action(description="Retire the selected candidates", permissions=["change"])
    def retire(self, request: HttpRequest, queryset: QuerySet[ScoringModel]) -> None:
        self._retire(request, list(queryset))
