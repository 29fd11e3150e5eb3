from scheduler.plan_result import ALL_DISABLED, mig_config_name


def test_mig_config_name_is_stable_and_order_free() -> None:
    a = mig_config_name([(0, ("3g.40gb", "4g.40gb")), (1, None)])
    b = mig_config_name([(1, None), (0, ("3g.40gb", "4g.40gb"))])
    assert a == b and a.startswith("costctl-") and len(a) == len("costctl-") + 10
    assert mig_config_name([(0, None), (1, None)]) == ALL_DISABLED
    assert mig_config_name([(0, ("7g.80gb",))]) != a


def test_mig_config_name_survives_a_shared_index() -> None:
    """Two devices reporting one index (bad inventory) must not crash sorting None vs tuple."""
    name = mig_config_name([(0, ("1g.10gb",) * 7), (0, None)])
    assert name == mig_config_name([(0, None), (0, ("1g.10gb",) * 7)])
