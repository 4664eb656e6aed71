"""When failures stop a stage: the share rule, the small-stage rule, and earlier runs' output."""

from collections import Counter

from ultrachat.config.base import FailurePolicy
from ultrachat.stages.pool import prior_counts
from ultrachat.stages.progress import too_many_failed

POLICY = FailurePolicy()  # max_failed_fraction 0.05, min_finished 20, exempt prompt_too_long


def test_share_is_judged_once_enough_finished():
    assert not too_many_failed(2, 19, POLICY, complete=False)  # too few to judge yet
    assert too_many_failed(2, 20, POLICY, complete=False)  # 10% > 5%
    assert not too_many_failed(1, 20, POLICY, complete=False)  # 5% is allowed
    assert not too_many_failed(0, 0, POLICY, complete=True)


def test_small_stage_fails_only_when_everything_failed():
    assert too_many_failed(3, 3, POLICY, complete=True)
    assert not too_many_failed(2, 3, POLICY, complete=True)
    assert not too_many_failed(3, 3, POLICY, complete=False)  # more may still succeed


def test_a_rerun_is_judged_over_the_whole_output():
    # An earlier run finished 23 calls and 1 failed; the re-run retries that 1 and it fails again:
    # 1 of 24 failed, as the first run left it, not "1 of 1".
    prior = prior_counts(Counter({"ok": 23}), POLICY)
    assert prior == Counter(done=23, failed_counted=0)
    assert not too_many_failed(1 + prior["failed_counted"], 1 + prior["done"], POLICY, complete=True)
    assert too_many_failed(1, 1, POLICY, complete=True)  # without the prior it would stop


def test_prior_failures_not_retried_still_count_and_exempt_reasons_do_not():
    prior = prior_counts(Counter({"done": 15, "failed:api_error": 4, "failed:prompt_too_long": 3}), POLICY)
    assert prior == Counter(done=22, failed_counted=4)
    assert too_many_failed(prior["failed_counted"], prior["done"], POLICY, complete=False)
