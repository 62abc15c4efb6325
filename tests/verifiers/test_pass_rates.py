"""Pass rates and audit weights, computed by hand."""

from __future__ import annotations

import pytest

from app.models import Verdict
from app.verifiers.service import _audit_weight, pass_rates, wilson


def test_pass_rates_average_the_unbiased_estimator_over_prompts():
    rows = [(1, True), (1, False), (1, False), (1, False), (2, True), (2, True), (2, False), (2, False), (3, False)]
    rates = pass_rates(rows, k=2)
    # prompt 1: 1 of 4 right: pass@1 0.25, pass@2 = 1 - C(3,2)/C(4,2) = 0.5; prompt 2: 0.5 and 1 - 1/6;
    # prompt 3 has one answer: in pass@1 (0.0), not in pass@2
    assert rates["pass_at_1"] == pytest.approx((0.25 + 0.5 + 0.0) / 3)
    assert rates["pass_at_k"] == pytest.approx((0.5 + 5 / 6) / 2)
    assert rates["prompts"] == 3 and rates["answers"] == 9
    low, high = rates["pass_at_1_ci"]
    assert 0.0 <= low <= rates["pass_at_1"] <= high <= 0.5


def test_wilson_interval():
    low, high = wilson(1, 10)
    assert low == pytest.approx(0.0179, abs=1e-3) and high == pytest.approx(0.4042, abs=1e-3)
    assert wilson(0, 0) == (None, None)


def test_audit_weights_lean_toward_suspicious_verdicts():
    def verdict(passed, near=False, reason=None):
        return Verdict(passed=passed, near_tolerance=near, reason=reason or ("passed" if passed else "wrong_answer"))

    plain = _audit_weight(verdict(True), None, None)
    assert _audit_weight(verdict(True), 0.1, 0.5) == 3 * plain  # a pass the reward model dislikes
    assert _audit_weight(verdict(True), 0.9, 0.5) == plain
    assert _audit_weight(verdict(False), 0.9, 0.5) == 3 * plain  # a failure the reward model likes
    assert _audit_weight(verdict(False, near=True), None, None) == 4 * plain
    assert _audit_weight(verdict(False, reason="timeout"), None, None) == 2 * plain


def test_pass_k_defaults_to_the_samples_per_prompt_for_params_and_figures_alike():
    from app.verifiers.service import DEFAULT_SAMPLES, check_params, pass_k

    assert pass_k({}) == DEFAULT_SAMPLES  # a job on existing answers too (was 1); job_pass_rates bounds it
    assert pass_k(check_params({"samples": 6})) == 6 and pass_k({"samples": 6, "k": 2}) == 2
