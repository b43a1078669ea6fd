"""The verdict "stuck" against a loop that could not look."""

from __future__ import annotations

from wsapp.stalljudge import STARVED_LIMIT_FACTOR, StallJudge


def _napped_on_time(judge: StallJudge, until: float) -> None:
    t = 0.0
    while t < until:
        judge.woke(slept_at=t, asked=judge.period, now=t + judge.period)
        t += judge.period


def test_work_that_finished_nothing_for_the_limit_on_a_responsive_loop_is_stuck():
    """Naps end on time: nothing finished for just over the limit is stuck, up to the limit is not."""
    judge = StallJudge(0.5)
    _napped_on_time(judge, 1.0)
    assert not judge.stuck(stuck_for=0.5, now=1.0)
    assert judge.stuck(stuck_for=0.51, now=1.0)


def test_a_late_nap_gives_a_whole_limit_of_responsive_time_before_a_verdict():
    """A nap of a quarter limit that ended two seconds late: no verdict until a limit after the loop came back."""
    judge = StallJudge(0.5)
    judge.woke(slept_at=0.0, asked=judge.period, now=2.0)
    assert not judge.stuck(stuck_for=2.0, now=2.0)
    assert not judge.stuck(stuck_for=2.49, now=2.49)
    assert judge.stuck(stuck_for=2.5, now=2.5)


def test_however_starved_the_loop_work_past_the_factor_times_the_limit_is_stuck():
    """Late naps one after another never stretch the wait past STARVED_LIMIT_FACTOR times the limit."""
    judge = StallJudge(0.5)
    over = STARVED_LIMIT_FACTOR * 0.5 + 0.01
    judge.woke(slept_at=over - 1.0, asked=judge.period, now=over)
    assert judge.stuck(stuck_for=over, now=over)
    assert not judge.stuck(stuck_for=over - 0.02, now=over - 0.02)
