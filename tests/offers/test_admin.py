from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from offers.models import DeadRecord, Decision, Offer, Product, Site
from streaming.policy import Outcome

pytestmark = pytest.mark.django_db

MODELS = [
    "site",
    "product",
    "offerrule",
    "scoringmodel",
    "decision",
    "offer",
    "mark",
    "deadrecord",
]


@pytest.fixture
def operator(client: Client) -> Client:
    user = User.objects.create_user(
        "olga", password="pw-for-tests", is_staff=True, is_superuser=True
    )
    client.force_login(user)
    return client


@pytest.mark.parametrize("model", MODELS)
def test_operators_see_every_model_under_its_contract_url(operator: Client, model):
    assert operator.get(f"/admin/offers/{model}/").status_code == 200


@pytest.mark.parametrize("model", MODELS)
def test_anonymous_visitors_are_sent_to_the_login_page(client: Client, model):
    response = client.get(f"/admin/offers/{model}/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_decisions_and_offers_are_read_only(operator: Client):
    site = Site.objects.create(key="demo", name="Demo", allowed_origins="*")
    decision = Decision.objects.create(
        site=site,
        session="s-1",
        pause_key="s-1:1",
        at=timezone.now(),
        outcome=Outcome.OFFER,
        risk=0.9,
    )
    now = timezone.now()
    offer = Offer.objects.create(
        decision=decision,
        public_id="o-1",
        session="s-1",
        code="SAVE10-TEST",
        title="t",
        message="m",
        discount_percent=10,
        created_at=now,
        expires_at=now,
    )
    assert operator.get("/admin/offers/decision/add/").status_code == 403
    assert operator.get("/admin/offers/offer/add/").status_code == 403
    page = operator.get(f"/admin/offers/decision/{decision.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    response = operator.post(f"/admin/offers/offer/{offer.pk}/change/", {"code": "CHANGED"})
    assert response.status_code == 403
    offer.refresh_from_db()
    assert offer.code == "SAVE10-TEST"
    assert (
        operator.post(f"/admin/offers/decision/{decision.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert Decision.objects.count() == 1


@pytest.mark.slow
def test_records_set_aside_are_shown_to_operators_and_only_deleted(operator: Client):
    dead = DeadRecord.objects.create(
        kind="decision",
        payload={"pause_key": "s-9:4", "site": "gone"},
        error="site 'gone' does not exist (deleted?)",
    )
    listing = operator.get("/admin/offers/deadrecord/")
    assert b"does not exist" in listing.content
    page = operator.get(f"/admin/offers/deadrecord/{dead.pk}/change/")
    assert b"s-9:4" in page.content and b'name="_save"' not in page.content
    assert operator.get("/admin/offers/deadrecord/add/").status_code == 403
    operator.post(f"/admin/offers/deadrecord/{dead.pk}/delete/", {"post": "yes"})
    assert not DeadRecord.objects.exists()


def small_model_active() -> None:
    """A small model active already: `bootstrap_demo` keeps it rather than train the demo's."""
    from offers.services import model_activate
    from tests.factories import stored_model

    model_activate(model=stored_model())


def test_operators_can_edit_demo_products(operator: Client):
    small_model_active()
    call_command("bootstrap_demo", stdout=io.StringIO())
    product = Product.objects.get(sku="sku-mug")
    data = {
        "site": product.site_id,
        "sku": product.sku,
        "name": "Big stoneware mug",
        "category": product.category,
        "price": "16.50",
        "description": product.description,
        "active": "on",
    }
    response = operator.post(f"/admin/offers/product/{product.pk}/change/", data)
    assert response.status_code == 302, response.content
    product.refresh_from_db()
    assert (product.name, str(product.price)) == ("Big stoneware mug", "16.50")


def test_allowed_origins_are_compared_in_their_normal_form():
    site = Site(
        key="s", name="S", allowed_origins="https://Shop.Example:443/\nhttp://localhost:8080\n"
    )
    assert site.allows_origin("https://shop.example")
    assert site.allows_origin("http://localhost:8080")
    assert not site.allows_origin("http://shop.example")
    assert not site.allows_origin("https://shop.example.evil.example")
    assert not site.allows_origin(None)
    assert Site(key="any", name="Any", allowed_origins="*").allows_origin(None)


@pytest.mark.slow
def test_the_demo_and_the_staff_user_are_made_once(tmp_path, capsys, monkeypatch):
    from offers.management.commands import ensure_staff

    monkeypatch.setattr(ensure_staff, "PASSWORD_FILE", tmp_path / ".admin-password")
    small_model_active()
    for _ in range(2):
        call_command("bootstrap_demo")
        call_command("ensure_staff")
    out = capsys.readouterr().out
    assert Site.objects.filter(key="demo").count() == 1
    assert Product.objects.filter(site__key="demo").count() == 12
    assert User.objects.filter(is_staff=True).count() == 1
    password = (tmp_path / ".admin-password").read_text().strip()
    assert out.count(password) == 2
    assert log_in(Client(), "admin", password).status_code == 302  # to the admin's index
    # The file written for another database (or a password changed since) is not printed.
    (tmp_path / ".admin-password").write_text("another-databases-password\n")
    call_command("ensure_staff")
    out = capsys.readouterr().out
    assert "another-databases-password" not in out
    assert "Log in as a staff user (admin)" in out and "changepassword" in out


def log_in(client: Client, username: str, password: str):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password})


def test_admin_logins_are_throttled_per_user_and_address(operator: Client):  # noqa: ARG001  # a user named olga
    client = Client()
    for _ in range(4):
        assert log_in(client, "olga", "wrong").status_code == 200  # the form again, with its error
    assert log_in(client, "olga", "wrong").status_code == 429  # the fifth locks the pair out
    assert log_in(client, "olga", "pw-for-tests").status_code == 429  # even the right password
    other = Client(REMOTE_ADDR="10.0.0.9")  # another address is not locked out
    assert log_in(other, "olga", "pw-for-tests").status_code == 302


@pytest.fixture
def tried(monkeypatch) -> list[bytes]:
    """The model files handed to the trial, which passes them without starting a process (the
    trial itself: tests/streaming/test_model_bounds.py and the slow tests below)."""
    from streaming import model_trial

    files: list[bytes] = []
    monkeypatch.setattr(model_trial, "_passed", {})
    monkeypatch.setattr(model_trial, "_try_in_a_process", lambda raw, **_: files.append(raw))
    return files


def upload(operator: Client, raw: bytes, name: str = "model.ubj"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return operator.post(
        "/admin/offers/scoringmodel/add/",
        {"name": "cart-risk", "notes": "", "model_file": SimpleUploadedFile(name, raw)},
    )


def test_operators_upload_a_model_and_it_waits_as_a_candidate(operator: Client, tried):
    from offers.models import ScoringModel
    from tests.factories import small_model

    response = upload(operator, small_model())
    assert response.status_code == 302, response.content.decode()[:2000]
    assert tried == [small_model()]
    model = ScoringModel.objects.get()
    assert (model.label, model.state, model.artifact_format) == ("cart-risk@1", "candidate", "ubj")
    json_model = _as_json(small_model(seed=3))
    assert upload(operator, json_model, "model.json").status_code == 302
    assert ScoringModel.objects.get(version=2).artifact_format == "json"


def _as_json(ubj: bytes) -> bytes:
    import xgboost

    booster = xgboost.Booster()
    booster.load_model(bytearray(ubj))
    return bytes(booster.save_raw("json"))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x94.", "pickle"),
        (b"", "empty"),
        (b"not a model at all", "JSON or UBJSON"),
    ],
)
def test_a_model_upload_that_is_not_a_model_is_refused_with_a_form_error(
    operator: Client, raw, message
):
    from offers.models import ScoringModel

    response = upload(operator, raw)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["model_file"]
    assert any(message.lower() in error.lower() for error in errors), errors
    assert ScoringModel.objects.count() == 0


def test_a_model_trained_on_other_features_is_refused(operator: Client, tried):
    import numpy as np
    import xgboost

    from offers.models import ScoringModel

    X = np.random.default_rng(0).random((200, 3)).astype(np.float32)
    data = xgboost.DMatrix(X, (X[:, 0] > 0.5).astype(np.float32), feature_names=["a", "b", "c"])
    booster = xgboost.train({"objective": "binary:logistic", "nthread": 1}, data, num_boost_round=3)
    response = upload(operator, bytes(booster.save_raw("ubj")))
    assert response.status_code == 200
    errors = " ".join(response.context["adminform"].form.errors["model_file"])
    assert "feature" in errors and "cart_value" in errors
    assert ScoringModel.objects.count() == 0
    assert tried == []  # refused before any trial


def form_errors(response) -> str:
    assert response.status_code == 200
    return " ".join(response.context["adminform"].form.errors["model_file"])


def test_a_model_1000_levels_deep_is_refused_with_a_form_error_naming_the_limit(
    operator: Client, tried
):
    from offers.models import ScoringModel
    from tests.hostile_models import deep_model

    response = upload(operator, deep_model(1_000), "deep.json")

    assert "tree 0 is 1,000 levels deep; the limit is a depth of 64" in form_errors(response)
    assert ScoringModel.objects.count() == 0
    assert tried == []  # XGBoost never saw it, not even in a separate process


def test_a_model_with_a_nan_leaf_is_refused_with_a_form_error(operator: Client, tried):
    from offers.models import ScoringModel
    from tests.hostile_models import edited_model, first_leaf, trees

    def poison(document) -> None:
        tree = trees(document)[0]
        tree["split_conditions"][first_leaf(tree)] = float("nan")

    errors = form_errors(upload(operator, edited_model(poison), "nan.json"))

    assert "its leaf value is nan" in errors and "finite" in errors
    assert ScoringModel.objects.count() == 0 and tried == []


@pytest.mark.slow
def test_a_real_upload_passes_its_trial(operator: Client):
    from offers.models import ScoringModel
    from tests.factories import small_model

    assert upload(operator, small_model(seed=21)).status_code == 302
    assert ScoringModel.objects.get().state == "candidate"


@pytest.mark.slow
def test_an_upload_that_crashes_its_trial_is_refused_and_nothing_is_stored(
    operator: Client, monkeypatch
):
    import sys

    from offers.models import ScoringModel
    from streaming import model_trial
    from tests.factories import small_model

    crash = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    monkeypatch.setattr(model_trial, "trial_command", lambda: [sys.executable, "-c", crash])

    errors = form_errors(upload(operator, small_model(seed=22)))

    assert "crashed with signal 11 (SIGSEGV)" in errors
    assert ScoringModel.objects.count() == 0


@pytest.mark.slow
def test_a_stored_model_past_the_limits_is_neither_activated_nor_shadowed(operator: Client):
    """A version stored before the limits: the trial refuses it, the admin says why."""
    from offers.models import ScoringModel
    from offers.services import model_create
    from streaming.features import FEATURE_NAMES
    from tests.hostile_models import deep_model

    deep = model_create(
        artifact=deep_model(1_000),
        artifact_format="json",
        feature_names=list(FEATURE_NAMES),
        metrics={},
    )
    for page in ("activate", "shadow"):
        confirm = operator.get(f"/admin/offers/scoringmodel/{deep.pk}/{page}/")
        assert "1,000 levels deep; the limit is a depth of 64" in confirm.content.decode()
        response = operator.post(
            f"/admin/offers/scoringmodel/{deep.pk}/{page}/", {"replacing": ""}, follow=True
        )
        shown = [str(message) for message in response.context["messages"]]
        assert any("1,000 levels deep; the limit is a depth of 64" in m for m in shown), shown
        deep.refresh_from_db()
        assert deep.state == ScoringModel.State.CANDIDATE


def test_operators_activate_roll_back_and_shadow_models(operator: Client, tried):
    from offers.models import ScoringModel
    from offers.services import model_create
    from streaming.features import FEATURE_NAMES
    from tests.factories import small_model

    one, two = (
        model_create(
            artifact=small_model(seed=s),
            artifact_format="ubj",
            feature_names=list(FEATURE_NAMES),
            metrics={},
        )
        for s in (1, 2)
    )

    def confirm(url: str, **fields: str) -> None:
        assert operator.get(url).status_code == 200
        assert operator.post(url, fields).status_code == 302

    def states() -> list[str]:
        return list(ScoringModel.objects.order_by("version").values_list("state", flat=True))

    confirm(f"/admin/offers/scoringmodel/{one.pk}/activate/", replacing="")
    assert states() == ["active", "candidate"]
    confirm(f"/admin/offers/scoringmodel/{two.pk}/activate/", replacing=one.label)
    assert states() == ["retired", "active"]
    confirm("/admin/offers/scoringmodel/rollback/", **{"from": two.label, "to": one.label})
    assert states() == ["active", "retired"]
    confirm(f"/admin/offers/scoringmodel/{two.pk}/shadow/", replacing="")
    assert states() == ["active", "shadow"]
    confirm(f"/admin/offers/scoringmodel/{two.pk}/unshadow/")
    assert states() == ["active", "retired"]
    response = operator.post(
        "/admin/offers/scoringmodel/",
        {"action": "activate", "_selected_action": [one.pk, two.pk]},
        follow=True,
    )  # two at once is refused
    assert "Select exactly one model to activate." in response.content.decode()
    assert states() == ["active", "retired"]
    assert set(tried) == {bytes(one.artifact), bytes(two.artifact)}  # each tried before serving


# --- decisions and offers in words ---------------------------------------------------------------


@pytest.fixture
def explained_offer(demo_site) -> tuple[Decision, Offer]:
    decision = Decision.objects.create(
        site=demo_site,
        session="s-7",
        pause_key="s-7:4",
        at=timezone.now(),
        outcome=Outcome.OFFER,
        risk=0.912345678901234,
        shadow_risk=0.4567891234,
        why="risk 0.91 reached the rule's 0.60",
        features={"views_since_add": 6.0, "seconds_since_add": 30.0, "product_views": 9.0},
        reasons=[
            {"feature": "views_since_add", "value": 6.0, "contribution": 1.4123456},
            {"feature": "seconds_since_add", "value": 30.0, "contribution": 0.31},
            {"feature": "product_views", "value": 9.0, "contribution": -0.2},
        ],
    )
    now = timezone.now()
    offer = Offer.objects.create(
        decision=decision,
        public_id="o-77",
        session="s-7",
        code="SAVE10-SEVEN",
        title="t",
        message="m",
        discount_percent=10,
        created_at=now,
        expires_at=now,
    )
    return decision, offer


def test_the_decision_list_shows_rounded_risks_why_and_reasons_in_words(
    client: Client, explained_offer
):
    from tests.factories import operator_user

    _, offer = explained_offer
    client.force_login(operator_user())  # staff who may view decisions, nothing more
    page = client.get("/admin/offers/decision/").content.decode()
    assert "0.912" in page and "0.457" in page and "0.912345" not in page
    assert "risk 0.91 reached the rule&#x27;s 0.60" in page
    assert "compared 6 products since adding to cart (raises risk)" in page
    assert "viewed 9 products (lowers risk)" in page
    assert "seconds_since_add" not in page and '"contribution"' not in page
    assert f"/admin/offers/offer/{offer.pk}/change/" in page


def test_a_decision_page_says_why_in_words_and_links_to_its_offer(
    operator: Client, explained_offer
):
    decision, offer = explained_offer
    page = operator.get(f"/admin/offers/decision/{decision.pk}/change/").content.decode()
    assert "0.912" in page and "0.912345" not in page
    assert "risk 0.91 reached the rule&#x27;s 0.60" in page
    assert "compared 6 products since adding to cart (raises risk)" in page
    assert "+1.412" in page  # each feature's push, to three decimals
    assert "product pages viewed" in page  # the features with their meanings
    assert f"/admin/offers/offer/{offer.pk}/change/" in page
    listing = operator.get("/admin/offers/offer/").content.decode()
    assert f"/admin/offers/decision/{decision.pk}/change/" in listing
    offer_page = operator.get(f"/admin/offers/offer/{offer.pk}/change/").content.decode()
    assert f"/admin/offers/decision/{decision.pk}/change/" in offer_page


def test_the_dashboards_link_goes_to_the_decision_once_it_is_recorded(
    operator: Client, explained_offer
):
    decision, _ = explained_offer
    found = operator.get("/admin/offers/decision/?pause_key=s-7%3A4")
    assert found.status_code == 302
    assert found["Location"] == f"/admin/offers/decision/{decision.pk}/change/"
    waiting = operator.get("/admin/offers/decision/?pause_key=s-8%3A1")
    assert waiting.status_code == 200
    assert "not in the database yet" in waiting.content.decode()


def test_models_show_their_pause_and_a_warning_when_it_is_not_the_live_one(
    operator: Client, settings
):
    from offers.models import ScoringModel

    settings.PAUSE_SECONDS = 30.0
    fitting, other = (
        ScoringModel.objects.create(
            version=version, artifact=b"x", artifact_format="ubj", pause_seconds=pause
        )
        for version, pause in ((1, 30.0), (2, 10.0))
    )
    ScoringModel.objects.filter(pk=other.pk).update(state=ScoringModel.State.ACTIVE)
    listing = operator.get("/admin/offers/scoringmodel/").content.decode()
    assert "30 s" in listing and "10 s: the live pause is 30 s" in listing
    assert (
        "Model cart-risk@2 (active) was trained for pauses of 10 s, but PAUSE_SECONDS is 30 s"
        in (listing)
    )
    page = operator.get(f"/admin/offers/scoringmodel/{other.pk}/change/").content.decode()
    assert "was trained for pauses of 10 s" in page
    fine = operator.get(f"/admin/offers/scoringmodel/{fitting.pk}/change/").content.decode()
    assert "was trained for pauses of" not in fine and "30 s" in fine


# --- the model lifecycle -------------------------------------------------------------------------

MODELS_URL = "/admin/offers/scoringmodel/"


@pytest.fixture
def registry(tried):  # noqa: ARG001  # tried: trials pass without a process
    """A good active model (cart-risk@1), a poor candidate (@2) and a candidate (@3)."""
    from offers.models import ScoringModel
    from tests.offers.outcomes import registered

    good = registered(rounds=30, state=ScoringModel.State.ACTIVE)
    ScoringModel.objects.filter(pk=good.pk).update(activated_at=timezone.now())
    poor = registered(rounds=1, max_depth=1)
    other = registered(rounds=5)
    return good, poor, other


def shown_messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def history(model) -> list[tuple[str, str]]:
    """The admin's history of `model`: (user, message), oldest first."""
    from django.contrib.admin.models import LogEntry

    entries = LogEntry.objects.filter(object_id=str(model.pk)).order_by("action_time", "pk")
    return [(str(entry.user), entry.get_change_message()) for entry in entries]


def timeline(model) -> list[tuple[str, str, str]]:
    """The model's own timeline: (action, user, previous), oldest first."""
    return [(e.action, e.user, e.previous) for e in model.events.order_by("at", "id")]


def test_the_active_and_the_shadow_model_cannot_be_deleted_from_their_page(
    operator: Client, registry
):
    from offers.models import ScoringModel

    good, poor, _ = registry
    ScoringModel.objects.filter(pk=poor.pk).update(state=ScoringModel.State.SHADOW)
    for model, said in (
        (good, "cart-risk@1 is the active model: activate another or roll back first; "),
        (poor, "cart-risk@2 is the shadow model: take it out of shadow or retire it first; "),
    ):
        page = operator.get(f"{MODELS_URL}{model.pk}/delete/", follow=True)
        assert [m for m in shown_messages(page) if m.startswith(said)], shown_messages(page)
        assert "retired models can be deleted" in page.content.decode()
        gone = operator.post(f"{MODELS_URL}{model.pk}/delete/", {"post": "yes"}, follow=True)
        assert any(m.startswith(said) for m in shown_messages(gone))
    assert ScoringModel.objects.count() == 3
    assert list(ScoringModel.objects.order_by("version").values_list("state", flat=True)) == [
        "active",
        "shadow",
        "candidate",
    ]


def test_the_bulk_delete_refuses_a_selection_with_a_model_in_use_and_deletes_nothing(
    operator: Client, registry
):
    from offers.models import ScoringModel

    good, poor, other = registry
    selected = [good.pk, poor.pk, other.pk]
    for post in ({}, {"post": "yes"}):  # neither the confirmation page nor the deletion
        response = operator.post(
            MODELS_URL,
            {"action": "delete_selected", "_selected_action": selected, **post},
            follow=True,
        )
        assert response.status_code == 200
        said = shown_messages(response)
        assert (
            "cart-risk@1 is the active model: activate another or roll back first; retired "
            "models can be deleted" in said
        )
        assert "Nothing was deleted." in said
    assert ScoringModel.objects.count() == 3


def test_a_model_decisions_refer_to_is_kept_with_a_message_never_a_500(
    operator: Client, registry, demo_site
):
    from offers.models import ScoringModel
    from tests.offers.outcomes import record_outcomes

    good, _, _ = registry
    record_outcomes(demo_site, 3, model=good)
    ScoringModel.objects.filter(pk=good.pk).update(state=ScoringModel.State.RETIRED)
    page = operator.get(f"{MODELS_URL}{good.pk}/delete/", follow=True)
    said = "cart-risk@1 scored 3 recorded decisions: they refer to it, so it is kept"
    assert page.status_code == 200 and any(m.startswith(said) for m in shown_messages(page))
    bulk = operator.post(
        MODELS_URL,
        {"action": "delete_selected", "_selected_action": [good.pk], "post": "yes"},
        follow=True,
    )
    assert bulk.status_code == 200 and any(m.startswith(said) for m in shown_messages(bulk))
    assert ScoringModel.objects.filter(pk=good.pk).exists()


def test_a_decision_written_between_the_check_and_the_delete_still_gives_a_message(
    operator: Client, registry, demo_site, monkeypatch
):
    from offers import admin_models
    from offers.models import ScoringModel
    from tests.offers.outcomes import record_outcomes

    _, poor, _ = registry
    ScoringModel.objects.filter(pk=poor.pk).update(state=ScoringModel.State.RETIRED)
    record_outcomes(demo_site, 1, model=poor)
    checks = iter(["", ""])  # the first checks find nothing: the decision "comes" after them
    real = admin_models._kept
    monkeypatch.setattr(admin_models, "_kept", lambda model: next(checks, None) or real(model))
    response = operator.post(f"{MODELS_URL}{poor.pk}/delete/", {"post": "yes"}, follow=True)
    assert response.status_code == 200
    assert any("scored 1 recorded decision:" in m for m in shown_messages(response))
    assert ScoringModel.objects.filter(pk=poor.pk).exists()


def test_a_retired_model_no_decision_refers_to_can_be_deleted(operator: Client, registry):
    from offers.models import ScoringModel

    _, poor, other = registry
    ScoringModel.objects.filter(pk__in=[poor.pk, other.pk]).update(state=ScoringModel.State.RETIRED)
    response = operator.post(
        MODELS_URL,
        {"action": "delete_selected", "_selected_action": [poor.pk, other.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert list(ScoringModel.objects.values_list("version", flat=True)) == [1]


def test_activating_asks_first_with_both_models_on_recorded_outcomes_and_the_gates_verdict(
    operator: Client, registry, demo_site
):
    from offers.models import ScoringModel
    from tests.offers.outcomes import record_outcomes

    _, poor, _ = registry
    record_outcomes(demo_site, 300)
    action = operator.post(MODELS_URL, {"action": "activate", "_selected_action": [poor.pk]})
    assert action.status_code == 302
    assert action["Location"] == f"{MODELS_URL}{poor.pk}/activate/"
    page = operator.get(action["Location"]).content.decode()
    assert "Activate cart-risk@2?" in page
    assert "300 decisions of the last 30 days with a known outcome" in page
    assert 'data-model="cart-risk@2"' in page and 'data-model="cart-risk@1"' in page
    assert 'data-verdict="refused"' in page
    assert "By the gate&#x27;s rule cart-risk@2 would not replace cart-risk@1: ROC-AUC" in page
    assert "Only 300 known outcomes" in page  # fewer than promote_shadow waits for
    assert 'name="csrfmiddlewaretoken"' in page and 'method="post"' in page
    poor.refresh_from_db()
    assert poor.state == ScoringModel.State.CANDIDATE  # nothing changed yet


def test_the_confirmation_says_so_when_there_are_not_enough_known_outcomes(
    operator: Client, registry
):
    _, poor, _ = registry
    page = operator.get(f"{MODELS_URL}{poor.pk}/activate/").content.decode()
    assert "Not enough known outcomes" in page
    assert 'data-verdict="unknown"' in page


def test_confirming_activates_and_writes_the_history_and_the_timeline(
    operator: Client, registry, demo_site
):
    from offers.models import ModelEvent, ScoringModel
    from tests.offers.outcomes import record_outcomes

    good, poor, _ = registry
    record_outcomes(demo_site, 200)
    page = operator.get(f"{MODELS_URL}{poor.pk}/activate/")
    verdict = page.context["verdict"].text
    response = operator.post(
        f"{MODELS_URL}{poor.pk}/activate/",
        {"replacing": good.label, "verdict": verdict},
        follow=True,
    )
    assert "Activated cart-risk@2 in place of cart-risk@1" in " ".join(shown_messages(response))
    poor.refresh_from_db()
    good.refresh_from_db()
    assert (poor.state, good.state) == (ScoringModel.State.ACTIVE, ScoringModel.State.RETIRED)
    (entry,) = history(poor)
    assert entry[0] == "olga"
    assert entry[1].startswith("Activated: from cart-risk@1 to cart-risk@2. By the gate's rule")
    assert history(good) == [("olga", "Retired: replaced by cart-risk@2 (activated)")]
    assert timeline(poor)[-1] == (ModelEvent.Action.ACTIVATED, "olga", "cart-risk@1")
    assert "would not replace" in poor.events.get(action=ModelEvent.Action.ACTIVATED).note
    assert timeline(good)[-1][:2] == (ModelEvent.Action.RETIRED, "olga")
    shown = operator.get(f"{MODELS_URL}{poor.pk}/change/").content.decode()
    assert "timeline" in shown and "Activated" in shown and "olga" in shown
    assert "cart-risk@1" in shown  # what it replaced, on its own page
    assert "from cart-risk@1 to cart-risk@2" in operator.get(
        f"{MODELS_URL}{poor.pk}/history/"
    ).content.decode().replace("&#x27;", "'")


def test_activation_is_a_post_with_a_csrf_token(registry):
    from django.contrib.auth.models import User

    from offers.models import ScoringModel

    _, poor, _ = registry
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(User.objects.create_superuser("ines", password="pw-for-tests"))
    assert strict.post(f"{MODELS_URL}{poor.pk}/activate/", {"replacing": ""}).status_code == 403
    poor.refresh_from_db()
    assert poor.state == ScoringModel.State.CANDIDATE


def test_a_confirmation_of_another_registry_is_shown_again_not_applied(operator: Client, registry):
    from offers.models import ScoringModel

    _, poor, _ = registry
    response = operator.post(
        f"{MODELS_URL}{poor.pk}/activate/", {"replacing": "cart-risk@9"}, follow=True
    )
    assert "The registry changed since that page was shown" in " ".join(shown_messages(response))
    assert response.redirect_chain[-1][0] == f"{MODELS_URL}{poor.pk}/activate/"
    poor.refresh_from_db()
    assert poor.state == ScoringModel.State.CANDIDATE


def test_putting_in_shadow_asks_first_and_is_logged_as_is_taking_out(operator: Client, registry):
    from offers.models import ModelEvent, ScoringModel

    _, poor, other = registry
    action = operator.post(MODELS_URL, {"action": "run_as_shadow", "_selected_action": [poor.pk]})
    assert action["Location"] == f"{MODELS_URL}{poor.pk}/shadow/"
    page = operator.get(action["Location"]).content.decode()
    assert "Put cart-risk@2 in shadow?" in page and 'data-model="cart-risk@1"' in page
    operator.post(action["Location"], {"replacing": ""})
    operator.post(f"{MODELS_URL}{other.pk}/shadow/", {"replacing": poor.label})
    poor.refresh_from_db()
    other.refresh_from_db()
    assert (poor.state, other.state) == (ScoringModel.State.RETIRED, ScoringModel.State.SHADOW)
    assert history(other) == [("olga", "Put in shadow: from cart-risk@2 to cart-risk@3")]
    assert history(poor) == [
        ("olga", "Put in shadow: cart-risk@2 (none before)"),
        ("olga", "Taken out of shadow (retired): replaced by cart-risk@3"),
    ]
    listing = operator.get(MODELS_URL).content.decode()
    assert f"{MODELS_URL}{other.pk}/unshadow/" in listing  # a button, not an action
    operator.post(f"{MODELS_URL}{other.pk}/unshadow/")
    other.refresh_from_db()
    assert other.state == ScoringModel.State.RETIRED
    assert history(other)[-1] == ("olga", "Taken out of shadow (retired): cart-risk@3 to no shadow")
    assert timeline(other)[-1] == (ModelEvent.Action.UNSHADOWED, "olga", "")


def test_roll_back_is_a_button_that_says_from_which_version_to_which(operator: Client, registry):
    from offers.models import ModelEvent, ScoringModel

    good, poor, _ = registry
    operator.post(f"{MODELS_URL}{poor.pk}/activate/", {"replacing": good.label})
    listing = operator.get(MODELS_URL).content.decode()
    assert f'href="{MODELS_URL}rollback/"' in listing and "Roll back to cart-risk@1" in listing
    assert 'value="rollback"' not in listing  # no longer an action on ticked rows
    page = operator.get(f"{MODELS_URL}rollback/").content.decode()
    assert "Roll back from cart-risk@2 to cart-risk@1" in page
    response = operator.post(
        f"{MODELS_URL}rollback/", {"from": poor.label, "to": good.label}, follow=True
    )
    assert "Rolled back from cart-risk@2 to cart-risk@1" in " ".join(shown_messages(response))
    good.refresh_from_db()
    poor.refresh_from_db()
    assert (good.state, poor.state) == (ScoringModel.State.ACTIVE, ScoringModel.State.RETIRED)
    assert history(good)[-1] == ("olga", "Rolled back: from cart-risk@2 to cart-risk@1")
    assert history(poor)[-1] == ("olga", "Retired: rolled back from cart-risk@2 to cart-risk@1")
    assert timeline(good)[-1] == (ModelEvent.Action.ROLLED_BACK, "olga", "cart-risk@2")


def test_roll_back_says_so_when_there_is_nothing_to_roll_back_to(operator: Client, registry):
    good, _, _ = registry
    assert "Roll back to" not in operator.get(MODELS_URL).content.decode()
    page = operator.get(f"{MODELS_URL}rollback/").content.decode()
    assert "There is no earlier active model to roll back to." in page
    assert "data-confirm-button" not in page
    operator.post(f"{MODELS_URL}rollback/", {"from": good.label, "to": ""})
    good.refresh_from_db()
    assert good.state == "active"


def test_candidates_and_the_shadow_are_retired_never_the_active_model(operator: Client, registry):
    from offers.models import ModelEvent, ScoringModel

    good, poor, other = registry
    ScoringModel.objects.filter(pk=other.pk).update(state=ScoringModel.State.SHADOW)
    refused = operator.post(
        MODELS_URL, {"action": "retire", "_selected_action": [good.pk, poor.pk]}, follow=True
    )
    assert any("cart-risk@1 is the active model" in m for m in shown_messages(refused))
    poor.refresh_from_db()
    assert poor.state == ScoringModel.State.CANDIDATE  # nothing changed
    operator.post(MODELS_URL, {"action": "retire", "_selected_action": [poor.pk, other.pk]})
    assert list(ScoringModel.objects.order_by("version").values_list("state", flat=True)) == [
        "active",
        "retired",
        "retired",
    ]
    assert history(poor) == [("olga", "Retired (was candidate)")]
    assert history(other) == [("olga", "Retired (was shadow)")]
    assert timeline(other)[-1][:2] == (ModelEvent.Action.RETIRED, "olga")
    page = operator.get(f"{MODELS_URL}{good.pk}/retire/").content.decode()
    assert "cart-risk@1 is the active model" in page and "data-confirm-button" not in page


def test_a_models_page_offers_what_may_happen_to_it_next(operator: Client, registry):
    good, poor, _ = registry
    candidate = operator.get(f"{MODELS_URL}{poor.pk}/change/").content.decode()
    for page in ("activate", "shadow", "retire"):
        assert f"{MODELS_URL}{poor.pk}/{page}/" in candidate
    assert f"{MODELS_URL}compare/?ids={poor.pk},{good.pk}" in candidate
    active = operator.get(f"{MODELS_URL}{good.pk}/change/").content.decode()
    assert f"{MODELS_URL}{good.pk}/activate/" not in active
    assert f"{MODELS_URL}{good.pk}/retire/" not in active


def test_confirmations_warn_of_a_model_trained_for_another_pause(
    operator: Client, registry, settings
):
    from offers.models import ScoringModel

    _, poor, _ = registry
    settings.PAUSE_SECONDS = 30.0
    ScoringModel.objects.filter(pk=poor.pk).update(pause_seconds=10.0)
    page = operator.get(f"{MODELS_URL}{poor.pk}/activate/").content.decode()
    assert "cart-risk@2 was trained on 10 s pauses but PAUSE_SECONDS is 30" in page


def test_the_compare_page_has_the_table_roc_curves_calibration_and_training_of_each(
    operator: Client, registry, demo_site
):
    from offers.models import ScoringModel
    from tests.offers.outcomes import record_outcomes

    good, poor, _ = registry
    ScoringModel.objects.filter(pk=good.pk).update(
        metrics={"auc": 0.91, "n_train": 480, "n_test": 120}, notes="trained on 600 sessions"
    )
    record_outcomes(demo_site, 300)
    action = operator.post(
        MODELS_URL, {"action": "compare", "_selected_action": [poor.pk, good.pk]}
    )
    assert action.status_code == 302
    page = operator.get(action["Location"])
    assert page.status_code == 200
    html = page.content.decode()
    for heading in ("decisions", "buyers", "ROC-AUC", "PR-AUC", "log-loss", "Brier", "ECE"):
        assert f">{heading}</th>" in html
    rows = {row.label: row for row in page.context["rows"]}
    assert list(rows) == ["cart-risk@1", "cart-risk@2"]  # the active first
    assert rows["cart-risk@1"].n == rows["cart-risk@2"].n == "300"
    good_auc, poor_auc = (float(rows[label].cells[0][0]) for label in rows)
    assert good_auc > poor_auc and rows["cart-risk@1"].cells[0][1]  # the best, in bold
    assert html.count('<svg class="lo-chart"') == 2
    assert 'data-chart="roc"' in html and 'data-chart="calibration"' in html
    assert html.count('<g data-model="cart-risk@1">') == 2  # a line in each chart
    assert "<polyline" in html and "<circle" in html
    assert "trained on 600 sessions" in html and "training rows" in html and "480" in html
    assert html.count("data-importance") == 2 and "views_since_add" in html


def test_the_compare_page_without_known_outcomes_says_so_and_shows_training_figures(
    operator: Client, registry
):
    from offers.models import ScoringModel

    good, _, _ = registry
    ScoringModel.objects.filter(pk=good.pk).update(metrics={"auc": 0.91, "n_train": 480})
    page = operator.get(f"{MODELS_URL}compare/?ids={good.pk}").content.decode()
    assert "Not enough known outcomes" in page
    assert "No curves without known outcomes" in page and 'class="lo-chart"' not in page
    assert "held-out ROC-AUC" in page and "0.9100" in page and "data-importance" in page


def test_from_one_to_five_models_are_compared(operator: Client, registry):
    from tests.offers.outcomes import registered

    more = [registered(rounds=2 + i) for i in range(3)]
    ids = [m.pk for m in (*registry, *more)]
    too_many = operator.post(MODELS_URL, {"action": "compare", "_selected_action": ids})
    assert too_many.status_code == 302 and too_many["Location"] == MODELS_URL
    five = operator.get(f"{MODELS_URL}compare/?ids={','.join(map(str, ids[:5]))}")
    assert five.status_code == 200 and len(five.context["rows"]) == 5
    for wrong in ("", "1,x", "999"):
        assert operator.get(f"{MODELS_URL}compare/?ids={wrong}").status_code == 302


def test_an_upload_is_measured_on_recorded_outcomes_beside_the_active_model(
    operator: Client,
    registry,  # noqa: ARG001  # an active model (cart-risk@1) to measure it beside
    demo_site,
):
    from offers.models import ModelEvent, ScoringModel
    from tests.factories import small_model
    from tests.offers.outcomes import record_outcomes

    record_outcomes(demo_site, 200)
    response = upload(operator, small_model(seed=7))
    assert response.status_code == 302
    model = ScoringModel.objects.get(version=4)
    live = model.metrics["live"]
    assert live["n"] == 200 and 0 < live["roc_auc"] <= 1
    assert set(live) >= {"buyers", "pr_auc", "log_loss", "brier", "ece", "active", "gate"}
    assert live["active"]["model"] == "cart-risk@1" and live["active"]["n"] == 200
    assert model.metrics["uploaded_by"] == "olga"
    assert timeline(model) == [(ModelEvent.Action.CREATED, "olga", "")]
    (entry,) = history(model)
    assert entry[1].startswith("Uploaded cart-risk@4 as a candidate; on 200 known outcomes")
    page = operator.get(f"{MODELS_URL}{model.pk}/change/").content.decode()
    assert "On recorded outcomes, at upload" in page and "cart-risk@1 (then active)" in page
    assert "live, at upload" in operator.get(MODELS_URL).content.decode()


def test_a_model_that_does_as_well_passes_the_gate_on_its_confirmation(
    operator: Client, registry, demo_site
):
    from offers.models import ScoringModel
    from tests.offers.outcomes import record_outcomes

    good, poor, _ = registry
    ScoringModel.objects.filter(pk=good.pk).update(state=ScoringModel.State.CANDIDATE)
    ScoringModel.objects.filter(pk=poor.pk).update(state=ScoringModel.State.ACTIVE)
    record_outcomes(demo_site, 600)
    page = operator.get(f"{MODELS_URL}{good.pk}/activate/").content.decode()
    assert 'data-verdict="passed"' in page
    assert "By the gate&#x27;s rule cart-risk@1 may replace cart-risk@2: ROC-AUC" in page
    assert "Only " not in page  # 600 outcomes: enough to judge


def test_staff_who_may_only_view_models_compare_them_but_change_nothing(client: Client, registry):
    from django.contrib.auth.models import Permission, User

    from offers.models import ScoringModel

    good, poor, _ = registry
    viewer = User.objects.create_user("vic", password="pw-for-tests", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_scoringmodel"))
    client.force_login(viewer)
    assert client.get(f"{MODELS_URL}compare/?ids={good.pk},{poor.pk}").status_code == 200
    page = client.get(f"{MODELS_URL}{poor.pk}/change/").content.decode()
    assert f"{MODELS_URL}{poor.pk}/activate/" not in page
    for url in (f"{poor.pk}/activate/", f"{poor.pk}/shadow/", f"{poor.pk}/retire/", "rollback/"):
        assert client.get(f"{MODELS_URL}{url}").status_code == 403
        assert client.post(f"{MODELS_URL}{url}", {"replacing": good.label}).status_code == 403
    poor.refresh_from_db()
    assert poor.state == ScoringModel.State.CANDIDATE
