"""Who sees which tenant's analytics (``gateway.analytics_routes.selected_tenant``)."""

from __future__ import annotations

import warnings

import pytest

from gateway.analytics_routes import selected_tenant
from gateway.auth import ADMIN, Identity
from gateway.errors import Forbidden
from gateway.problems import Problem


def admin_of(tenant: str) -> Identity:
    return Identity(sub="root", tenant=tenant, scopes=frozenset({ADMIN}), tier="free")


def test_a_tenant_admin_sees_their_own_tenant_and_no_other() -> None:
    acme = admin_of("acme")
    assert selected_tenant(acme, None, operator_tenant="default") == "acme"
    assert selected_tenant(acme, "acme", operator_tenant="default") == "acme"
    for other in ("globex", "*", "default"):
        with pytest.raises(Forbidden):
            selected_tenant(acme, other, operator_tenant="default")


def test_an_operator_sees_their_own_by_default_and_any_tenant_or_all_when_asked() -> None:
    op = admin_of("ops")
    assert selected_tenant(op, None, operator_tenant="ops") == "ops"
    assert selected_tenant(op, "globex", operator_tenant="ops") == "globex"
    assert selected_tenant(op, "*", operator_tenant="ops") == "*"
    # (aiohttp deprecates the body argument that Problem passes to HTTPException.)
    with pytest.raises(Problem) as exc, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        selected_tenant(op, "not a tenant!", operator_tenant="ops")
    assert exc.value.status_code == 400
