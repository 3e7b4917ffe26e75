from __future__ import annotations

import pytest
from pydantic import ValidationError

from fieldstation.conversion import Linear, Polynomial, PowerOfTen


def test_linear() -> None:
    assert Linear(slope=2.0, offset=-1.0)(3.0) == 5.0


def test_polynomial_ascending_powers() -> None:
    assert Polynomial(coefficients=[1.0, 2.0, 3.0])(2.0) == 1 + 2 * 2 + 3 * 4


def test_power_of_ten_calibration_curve() -> None:
    # P = a·10^(b·V − c) + d with a Pfeiffer-style curve: 10^(1.667·6.8 − 11.33) mbar.
    p = PowerOfTen(a=1.0, b=1.667, c=11.33, d=0.0)(6.8)
    assert p == pytest.approx(10 ** (1.667 * 6.8 - 11.33))
    assert PowerOfTen(a=2.0, b=1.0, c=1.0, d=0.5)(1.0) == pytest.approx(2.5)


def test_polynomial_needs_coefficients() -> None:
    with pytest.raises(ValidationError):
        Polynomial(coefficients=[])
