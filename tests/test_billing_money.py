"""Exact money and priced plans: integer nano-dollars, one half-up rounding, prices as
written in YAML, and the config errors a wrong price or billing section gets."""

from __future__ import annotations

from fractions import Fraction

import pytest

from proxy.billing.money import BadAmount, minor_to_text, nano_to_minor, nano_to_text, round_half_up, to_nano
from proxy.config.build import load_config
from proxy.config.snapshot import Pricing
from proxy.config.source import ConfigError

BASE = ("models:\n  m1: {pricing: {input: 0.15, output: 0.6}}\n  m2: {pricing: {input: 1, output: 2}}\n"
        "upstreams:\n  - name: a\n    url: http://127.0.0.1:9\n    models: \"*\"\nauth: {default_plan: free}\n")


def test_decimal_text_becomes_exact_nano_units():
    assert to_nano(0.15) == 150_000_000 and to_nano("20.00") == 20 * 10**9 and to_nano(0) == 0
    assert to_nano(0.1) + to_nano(0.2) == to_nano(0.3)  # no float arithmetic anywhere
    for bad in (-1, "1.0000000001", "abc", True, float("inf")):
        with pytest.raises(BadAmount):
            to_nano(bad)


def test_rounding_is_once_and_half_up_to_the_minor_unit():
    assert [round_half_up(n, 10) for n in (14, 15, 16, -15, 25)] == [1, 2, 2, -2, 3]
    assert nano_to_minor(5_000_000, "USD") == 1  # $0.005 → $0.01, not banker's $0.00
    assert nano_to_minor(4_999_999, "USD") == 0
    assert nano_to_minor(Fraction(10 * 10**9 * 10, 30), "USD") == 333  # $10 × 10/30
    assert minor_to_text(2333, "USD") == "23.33" and minor_to_text(-100, "USD") == "-1.00"
    assert nano_to_text(1500) == "0.0000015" and nano_to_text(30 * 10**9) == "30"


def test_a_request_costs_exact_nano_dollars():
    p = Pricing(input_nano=150_000_000, output_nano=600_000_000, cached_input_nano=75_000_000)
    assert p.cost_nano(3, 1) == 3 * 150 + 600  # micro-dollars would round this to 1
    assert p.cost_nano(10, 0, cached_tokens=4) == 6 * 150 + 4 * 75
    assert Pricing(input_nano=1, output_nano=0).cost_nano(500_000, 0) == 1  # half a nano rounds up
    assert p.cost(1_000_000, 0) == 0.15


def write(tmp_path, text: str) -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text(BASE + text)
    return str(path)


def test_plans_carry_fee_included_tokens_overage_and_product(tmp_path):
    snapshot = load_config(write(tmp_path, (
        "plans:\n  free: {}\n  pro:\n    price:\n      monthly: '19.99'\n      included_tokens: 5000\n"
        "      overage: {m1: {input: 0.3, output: 1.2}}\n      creem_product_id: prod_abc\n")))
    price = snapshot.plans["pro"].price
    assert (price.monthly_fee_nano, price.included_tokens, price.creem_product_id) == (
        19_990_000_000, 5000, "prod_abc")
    models = snapshot.models
    assert price.pricing_for(models["m1"]) == Pricing(input_nano=300_000_000, output_nano=1_200_000_000)
    assert price.pricing_for(models["m2"]) == models["m2"].pricing  # no overage: the model's own price


def test_the_older_price_usd_month_still_loads_as_the_fee(tmp_path):
    snapshot = load_config(write(tmp_path, "plans:\n  free: {}\n  pro: {price_usd_month: 20}\n"))
    assert snapshot.plans["pro"].price.monthly_fee_nano == 20 * 10**9


@pytest.mark.parametrize("plans,message", [
    ("  pro: {price_usd_month: 20, price: {monthly: 20}}\n",
     "plans.pro.price_usd_month: give the monthly fee once: price_usd_month is the older "
     "spelling of price.monthly; remove it"),
    ("  pro: {price: {monthly: '1.5.0'}}\n", "plans.pro.price.monthly: '1.5.0' does not have the "
     "expected format (USD as a number or a decimal string such as \"20.00\", at most nine decimals)"),
    ("  pro: {price: {overage: {nope: {input: 1, output: 1}}}}\n",
     "plans.pro.price.overage.nope: model 'nope' is not declared in models"),
    ("  pro: {price: {monthly: 0.0000000001}}\n",
     "plans.pro.price.monthly: not an amount: 1e-10 has more than nine decimals"),
])
def test_a_wrong_plan_price_is_a_clear_config_error(tmp_path, plans, message):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "plans:\n  free: {}\n" + plans))
    assert [str(p).split("gateway.yaml:", 1)[1].split(": ", 1)[1] for p in caught.value.problems] == [message]


@pytest.mark.parametrize("billing,message", [
    ("billing: {currency: GBP}\n", "billing.currency: 'GBP' is not one of ['USD', 'EUR']"),
    ("billing: {invoice_grace: 40d}\n", "billing.invoice_grace: must be at most 28d"),
    ("billing: {creem: {webhook_secret_env: BM_UNSET_SECRET_FOR_TEST}}\n",
     "billing.creem.webhook_secret_env: environment variable BM_UNSET_SECRET_FOR_TEST is not set "
     "(it holds a secret the config names)"),
    ("billing: {creem: {api_key: sk-live-123}}\n", "billing.creem.api_key: unknown field 'api_key' "
     "(known: base_url, api_key_env, webhook_secret_env, success_url, timeout)"),
])
def test_a_wrong_billing_section_is_a_clear_config_error(tmp_path, billing, message):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "plans:\n  free: {}\n" + billing))
    assert [str(p).split("gateway.yaml:", 1)[1].split(": ", 1)[1] for p in caught.value.problems] == [message]


def test_billing_defaults_leave_payments_off(tmp_path):
    billing = load_config(write(tmp_path, "plans:\n  free: {}\n")).billing
    assert (billing.currency, billing.invoice_grace, billing.creem.webhook_secret, billing.creem.api_key) == (
        "USD", 3 * 86400.0, None, None)
