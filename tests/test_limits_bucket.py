import pytest

from proxy.limits.bucket import TokenBucket


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_starts_full_and_refills_capacity_per_period():
    clock = Clock()
    bucket = TokenBucket(60, clock=clock)
    assert bucket.rate == 1.0
    assert bucket.refill() == 60
    for _ in range(60):
        assert bucket.try_take(1)
    assert not bucket.try_take(1)
    assert bucket.level == 0
    clock.now += 0.5
    assert bucket.refill() == 0.5
    assert not bucket.try_take(1)
    clock.now += 0.5
    assert bucket.try_take(1)
    assert bucket.level == 0


def test_refill_never_exceeds_capacity():
    clock = Clock()
    bucket = TokenBucket(120, clock=clock)
    assert bucket.try_take(30)
    clock.now += 3600
    assert bucket.refill() == 120


def test_refused_take_changes_nothing():
    clock = Clock()
    bucket = TokenBucket(10, clock=clock)
    assert bucket.try_take(8)
    assert not bucket.try_take(3)
    assert bucket.level == 2


def test_non_integral_rate_still_admits_a_due_token():
    # 100/60 per second: after 0.6 s exactly one token is due, though the
    # float product lands a hair away from 1.0.
    clock = Clock(0.0)
    bucket = TokenBucket(100, clock=clock)
    assert bucket.try_take(100)
    clock.now = 0.6
    assert bucket.try_take(1)
    assert not bucket.try_take(1)


def test_wait():
    clock = Clock()
    bucket = TokenBucket(60, clock=clock)
    assert bucket.wait(1) == 0.0
    assert bucket.try_take(60)
    assert bucket.wait(1) == 1.0
    assert bucket.wait(15) == 15.0
    clock.now += 0.25
    assert bucket.wait(1) == 0.75


def test_adjust_refunds_up_to_capacity_and_charges_into_debt():
    clock = Clock()
    bucket = TokenBucket(1000, clock=clock)
    assert bucket.try_take(400)
    bucket.adjust(300)  # used 100 of the 400 reserved
    assert bucket.level == 900
    bucket.adjust(500)
    assert bucket.level == 1000
    bucket.adjust(-3000)  # real usage far above the reservation
    assert bucket.level == -2000
    assert not bucket.try_take(1)
    assert bucket.wait(1) == pytest.approx(2001 * 0.06)


def test_charge_after_idle_time_is_taken_from_the_refilled_level():
    clock = Clock()
    bucket = TokenBucket(60, clock=clock)
    assert bucket.try_take(60)
    clock.now += 120  # full again, and not beyond
    bucket.adjust(-10)
    assert bucket.level == 50


def test_clock_stepping_back_mints_nothing():
    clock = Clock(1000.0)
    bucket = TokenBucket(60, clock=clock)
    assert bucket.try_take(60)
    clock.now = 990.0
    assert bucket.refill() == 0
    clock.now = 1000.5
    assert bucket.refill() == 0.5


def test_resize_clips_and_never_tops_up():
    clock = Clock()
    bucket = TokenBucket(60, clock=clock)
    assert bucket.try_take(50)  # level 10
    bucket.resize(5)
    assert (bucket.capacity, bucket.level, bucket.rate) == (5, 5, 5 / 60)
    bucket.resize(600)
    assert (bucket.capacity, bucket.level, bucket.rate) == (600, 5, 10.0)
    clock.now += 1
    assert bucket.refill() == 15


def test_resize_counts_elapsed_time_at_the_old_rate():
    clock = Clock()
    bucket = TokenBucket(60, clock=clock)
    assert bucket.try_take(60)
    clock.now += 10  # 10 tokens at 1/s
    bucket.resize(6000)  # 100/s from now on
    assert bucket.level == 10
    clock.now += 1
    assert bucket.refill() == 110


def test_explicit_now_overrides_the_clock():
    bucket = TokenBucket(60, clock=lambda: 0.0, now=0.0)
    assert bucket.try_take(60, now=0.0)
    assert bucket.try_take(1, now=1.0)
    assert bucket.is_full(now=61.0)


@pytest.mark.parametrize("capacity,period,message", [
    (-1, 60.0, "capacity must be >= 0, got -1"),
    (10, 0.0, "period must be > 0, got 0.0"),
])
def test_rejects_impossible_shapes(capacity, period, message):
    with pytest.raises(ValueError) as info:
        TokenBucket(capacity, period=period, clock=lambda: 0.0)
    assert str(info.value) == message


def test_fit_holds_at_most_a_whole_bucket_and_a_zero_bucket_still_asks_for_one():
    assert TokenBucket(1000, clock=Clock()).fit(400) == 400
    assert TokenBucket(1000, clock=Clock()).fit(5000) == 1000
    assert TokenBucket(0, clock=Clock()).fit(5) == 1


def test_can_take_then_take_is_try_take_in_two_steps():
    clock = Clock()
    bucket = TokenBucket(60, clock=clock)
    assert bucket.can_take(60, clock.now)
    bucket.take(60)
    assert not bucket.can_take(1, clock.now) and bucket.level == 0
    clock.now += 1.0
    assert bucket.can_take(1, clock.now) and bucket.level == 1.0


def test_header_numbers_are_limit_whole_tokens_left_and_seconds_to_full():
    clock = Clock()
    bucket = TokenBucket(60, clock=clock)
    assert bucket.header_numbers() == (60, 60, 0.0)
    bucket.take(14.5)
    assert bucket.header_numbers() == (60, 45, 14.5)
    bucket.take(50)
    assert bucket.header_numbers() == (60, 0, 64.5)
