"""The fleet's shared state: seed, size, identities on demand, and overrides of written meters."""

from __future__ import annotations

from collections.abc import Sequence

from flowsd.sim.cache import BoundedCache
from flowsd.sim.identity import Hardware, MeterIdentity, build_identity, serial_for
from flowsd.sim.model import MeterModel
from flowsd.sim.overrides import MeterOverrides

_IDENTITY_CACHE_SIZE = 2_048


class FleetState:
    """Identity and overrides for meters 0..size-1; everything else is computed on demand."""

    def __init__(
        self,
        *,
        seed: int,
        size: int,
        base_address: str,
        history_days: int,
        hardware: Sequence[Hardware] | None = None,
    ) -> None:
        self.seed = seed
        self.size = size
        self.base_address = base_address
        self.history_days = history_days
        self._hardware = tuple(hardware) if hardware else None
        self._identities: BoundedCache[int, MeterIdentity] = BoundedCache(_IDENTITY_CACHE_SIZE)
        self._overrides: dict[int, MeterOverrides] = {}
        self._serials: dict[str, int] | None = None
        # Validate the address range once, up front.
        if size:
            build_identity(seed, size - 1, base_address)

    def hardware_of(self, index: int) -> Hardware | None:
        return self._hardware[index % len(self._hardware)] if self._hardware else None

    def identity(self, index: int) -> MeterIdentity:
        if not 0 <= index < self.size:
            raise IndexError(f"no meter {index} in a fleet of {self.size}")
        return self._identities.get_or_compute(
            index,
            lambda: build_identity(self.seed, index, self.base_address, self.hardware_of(index)),
        )

    def serial(self, index: int) -> str:
        return serial_for(index)

    def overrides(self, index: int) -> MeterOverrides | None:
        return self._overrides.get(index)

    def writable(self, index: int) -> MeterOverrides:
        """The meter's overrides, created on the first write."""
        found = self._overrides.get(index)
        if found is None:
            found = self._overrides[index] = MeterOverrides()
        return found

    def model(self, index: int) -> MeterModel:
        return MeterModel(self.identity(index), self._overrides.get(index), self.history_days)

    def index_of(self, meter: int | str) -> int:
        """A meter's index from its index or serial."""
        if isinstance(meter, int):
            if not 0 <= meter < self.size:
                raise IndexError(f"no meter {meter} in a fleet of {self.size}")
            return meter
        if self._serials is None:
            self._serials = {serial_for(i): i for i in range(self.size)}
        try:
            return self._serials[meter]
        except KeyError:
            raise KeyError(f"no meter with serial {meter!r}") from None
