"""The clocks moved to drover/clock.py (time is not the lab's alone); kept for old imports."""

from drover.clock import AutojumpClock, Clock, ManualClock, SystemClock

__all__ = ["AutojumpClock", "Clock", "ManualClock", "SystemClock"]
