"""The processor's rate window (its lag and rate gauges)."""

from services.processor.metrics import RateWindow



def test_rate_window_averages_over_its_window():
    """Events per second over the window, forgetting older samples."""
    now = [0.0]
    rate = RateWindow(window_s=10, clock=lambda: now[0])
    rate.add(100)
    now[0] = 5.0
    assert rate.add(400) == 100.0
    now[0] = 20.0
    assert rate.add(50) == 50.0
