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


def test_operators_can_edit_demo_products(operator: Client):
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
    for action in ("activate", "run_as_shadow"):
        response = operator.post(
            "/admin/offers/scoringmodel/",
            {"action": action, "_selected_action": [deep.pk]},
            follow=True,
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

    def act(action: str, *models: ScoringModel) -> None:
        response = operator.post(
            "/admin/offers/scoringmodel/",
            {"action": action, "_selected_action": [m.pk for m in models]},
        )
        assert response.status_code == 302

    def states() -> list[str]:
        return list(ScoringModel.objects.order_by("version").values_list("state", flat=True))

    act("activate", one)
    assert states() == ["active", "candidate"]
    act("activate", two)
    assert states() == ["retired", "active"]
    act("rollback", two)
    assert states() == ["active", "retired"]
    act("run_as_shadow", two)
    assert states() == ["active", "shadow"]
    act("stop_shadow", two)
    assert states() == ["active", "retired"]
    act("activate", one, two)  # two at once is refused
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
