"""Collapse warnings and held-out iteration control, on fabricated traces and metric sequences."""

from __future__ import annotations

import pytest

from exspin.guards import chosen_logp_warning, control, length_drift_warning, reference_logps


def test_control_keeps_the_best_and_stops_after_patience():
    history = [("start", 37.5), ("sft", 40.0), ("exspin-1", 42.0), ("exspin-2", 41.0)]
    decision = control(history, patience=1)
    assert decision.best == "exspin-1" and not decision.stop
    assert decision.build_on == "exspin-1"  # exspin-2 fell below the best: roll back
    decision = control([*history, ("exspin-3", 30.0)], patience=1)
    assert decision.best == "exspin-1" and decision.stop and "patience 1" in decision.reason


def test_control_never_hands_over_a_worse_model_than_the_start():
    collapse = [("start", 37.5), ("sft", 37.5), ("exspin-1", 2.0)]
    decision = control(collapse, patience=0)
    assert decision.best == "start" and decision.stop


def test_without_rollback_the_chain_continues_from_a_worse_iterate():
    history = [("start", 37.5), ("sft", 40.0), ("exspin-1", 2.0)]
    assert control(history, patience=5).build_on == "sft"
    unguarded = control(history, patience=5, rollback=False)
    assert unguarded.build_on == "exspin-1" and unguarded.best == "sft"  # still hands over the best


def test_a_tie_continues_the_chain_but_keeps_the_earlier_best():
    decision = control([("start", 40.0), ("sft", 50.0), ("exspin-1", 50.0)], patience=2)
    assert decision.best == "sft" and decision.build_on == "exspin-1" and not decision.stop


def test_control_min_gain_and_ties():
    assert control([("start", 10.0), ("sft", 10.0)], patience=3).best == "start"  # a tie is no gain
    assert control([("start", 10.0), ("sft", 10.4)], patience=3, min_gain=0.5).best == "start"
    assert control([("start", 10.0), ("sft", 10.6)], patience=3, min_gain=0.5).best == "sft"
    with pytest.raises(ValueError):
        control([], patience=1)


def test_chosen_logp_warning_fires_on_a_collapse_trace():
    beta = 0.1
    # rewards/chosen = beta * (policy - reference): the gold SQL's log-prob sliding 12 nats below the reference.
    collapse = [{"step": i, "rewards/chosen": -beta * 1.5 * i, "logps/chosen": -20.0 - 1.5 * i} for i in range(9)]
    healthy = [{"step": i, "rewards/chosen": beta * 0.2 * i} for i in range(9)]
    warning = chosen_logp_warning(collapse, beta, max_drop=5.0)
    assert warning is not None and "12.0 nats" in warning
    assert chosen_logp_warning(healthy, beta, max_drop=5.0) is None
    assert chosen_logp_warning([], beta, max_drop=5.0) is None


def test_length_drift_warning():
    assert length_drift_warning(100.0, 180.0, 0.5) is not None
    assert length_drift_warning(100.0, 130.0, 0.5) is None
    assert length_drift_warning(0.0, 50.0, 0.5) is None


def test_reference_logps_recovered_from_rewards():
    rows = reference_logps([{"step": 1, "logps/chosen": -10.0, "logps/rejected": -20.0,
                             "rewards/chosen": 0.2, "rewards/rejected": -0.3}], beta=0.1)
    assert rows == [{"step": 1, "policy_chosen": -10.0, "policy_rejected": -20.0,
                     "reference_chosen": pytest.approx(-12.0), "reference_rejected": pytest.approx(-17.0)}]
