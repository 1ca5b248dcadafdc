"""
Shared test set-up.
"""

from hypothesis import HealthCheck, settings

# CI machines are small and busy (a browser and a VM may run beside the
# property tests): judge properties, not the speed of one draw.
settings.register_profile(
    "txvnc", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("txvnc")
