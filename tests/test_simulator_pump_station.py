"""Pump-station simulator: the physics on its own, then the Modbus server over loopback.

The Modbus half talks to the server with pymodbus's own client and decodes with ``struct``,
never with citytwin.drivers, so the simulator and our driver stay independent checks of
each other.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import struct
from collections.abc import AsyncIterator, Callable

import pytest
from conftest import eventually
from pymodbus.client import AsyncModbusTcpClient

from citytwin.simulators.pump_station.physics import PumpStation
from citytwin.simulators.pump_station.server import PumpStationSimulator, serve

FROZEN = 3600.0  # a tick so long the physics only moves when a test steps it

# ---------------------------------------------------------------- physics


def quiet_station(**kwargs: float) -> PumpStation:
    """No storms, so level trends depend only on the pumps."""
    return PumpStation(seed=1, storm_interval=None, **kwargs)


def run_until(station: PumpStation, done: Callable[[], bool], limit_s: float) -> None:
    for _ in range(int(limit_s)):
        if done():
            return
        station.step(1.0)
    raise AssertionError("condition not reached in simulated time")


def test_level_rises_with_no_pump_running() -> None:
    station = quiet_station()
    station.step(120.0)
    # about 150 m3/h into 20 m2: roughly 0.25 m in two minutes
    assert 2.1 < station.level < 2.5
    assert station.outflow == 0.0
    assert station.outlet_pressure == 0.0
    assert all(not pump.running and pump.current == 0.0 for pump in station.pumps)


def test_level_falls_with_both_pumps_at_full_speed() -> None:
    station = quiet_station()
    for number in (1, 2):
        station.set_setpoint(number, 50.0)
        station.set_run(number, True)
    station.step(300.0)
    assert station.level < 1.2
    assert station.outflow > 500.0
    assert 150.0 <= station.outlet_pressure <= 250.0
    assert station.pumps[0].current == pytest.approx(45.0)  # 5 A + 40 A at 50 Hz
    assert station.pumps[0].run_hours == pytest.approx(300.0 / 3600.0)


def test_frequency_ramps_at_5_hz_per_second_both_ways() -> None:
    station = quiet_station()
    station.set_run(1, True)
    station.step(1.0)
    assert station.pumps[0].running
    assert station.pumps[0].frequency == pytest.approx(5.0)
    station.step(10.0)
    assert station.pumps[0].frequency == pytest.approx(45.0)  # default setpoint, no overshoot
    station.set_setpoint(1, 30.0)
    station.step(2.0)
    assert station.pumps[0].frequency == pytest.approx(35.0)
    station.set_run(1, False)
    station.step(1.0)
    assert not station.pumps[0].running
    assert station.pumps[0].frequency == pytest.approx(30.0)
    station.step(10.0)
    assert station.pumps[0].frequency == 0.0


def test_fault_stops_the_pump_and_latches_until_reset() -> None:
    station = quiet_station()
    station.set_run(2, True)
    station.step(10.0)
    station.inject_fault(2)
    station.step(20.0)
    pump = station.pump(2)
    assert pump.fault and not pump.running and pump.frequency == 0.0
    assert pump.run_cmd  # the command is untouched; the fault overrides it
    station.reset_fault(2)
    station.step(1.0)
    assert not pump.fault and pump.running


def test_float_backup_runs_pump_1_without_a_command() -> None:
    station = quiet_station(initial_level=5.2)
    assert station.high_level_float
    station.step(1.0)
    pump1, pump2 = station.pumps
    assert pump1.running and not pump1.run_cmd and not pump2.running
    run_until(station, lambda: station.level < 4.5, 3600)
    station.step(1.0)
    assert not pump1.running and not station.high_level_float


def test_float_backup_does_not_run_a_faulted_pump() -> None:
    station = quiet_station(initial_level=5.2)
    station.inject_fault(1)
    station.step(1.0)
    assert not station.pumps[0].running


def test_low_level_cutoff_holds_pumps_until_the_well_refills() -> None:
    station = quiet_station(initial_level=0.2)
    station.set_run(1, True)
    station.step(5.0)
    assert not station.pumps[0].running and not station.pumps[0].fault
    assert station.pumps[0].frequency == 0.0
    run_until(station, lambda: station.pumps[0].running, 600)
    assert station.level >= 0.4


def test_pumping_down_stops_at_the_cutoff_level() -> None:
    station = quiet_station(initial_level=1.0)
    for number in (1, 2):
        station.set_run(number, True)
    station.step(1.0)
    assert station.pumps[0].running
    run_until(station, lambda: not station.pumps[0].running, 3600)
    assert 0.1 < station.level < 0.3


def test_setpoint_outside_25_to_50_hz_is_refused() -> None:
    station = quiet_station()
    for bad in (24.9, 50.1, math.nan):
        with pytest.raises(ValueError):
            station.set_setpoint(1, bad)
    assert station.pumps[0].setpoint == 45.0


def test_storm_raises_inflow_towards_600() -> None:
    station = quiet_station()
    station.start_storm(peak=400.0, duration=100.0)
    station.step(50.0)
    assert 450.0 < station.inflow < 700.0


def test_random_storms_happen_and_stay_bounded() -> None:
    station = PumpStation(seed=3, storm_interval=300.0)
    peak = 0.0
    for _ in range(3600):
        station.step(1.0)
        peak = max(peak, station.inflow)
    assert 300.0 < peak < 750.0


def test_speed_scales_simulated_time() -> None:
    station = quiet_station(speed=10.0)
    station.step(0.5)
    assert station.sim_time == pytest.approx(5.0)


def snapshot(station: PumpStation) -> tuple[object, ...]:
    pumps = tuple((p.frequency, p.running, p.run_hours, p.current) for p in station.pumps)
    return (station.level, station.inflow, station.outflow, station.outlet_pressure, pumps)


def scripted_run(seed: int) -> list[tuple[object, ...]]:
    station = PumpStation(seed=seed, storm_interval=120.0)
    history = []
    for second in range(900):
        if second == 100:
            station.set_run(1, True)
        if second == 400:
            station.set_run(2, True)
        station.step(1.0)
        history.append(snapshot(station))
    return history


def test_same_seed_same_history_other_seed_differs() -> None:
    assert scripted_run(7) == scripted_run(7)
    assert scripted_run(7) != scripted_run(8)


# ---------------------------------------------------------------- Modbus over loopback


def f32(value: float) -> list[int]:
    return list(struct.unpack(">HH", struct.pack(">f", value)))


def from_f32(words: list[int]) -> float:
    value: float = struct.unpack(">f", struct.pack(">HH", *words))[0]
    return value


def from_u32(words: list[int]) -> int:
    return words[0] << 16 | words[1]


async def connect(port: int) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    assert await client.connect()
    return client


@pytest.fixture
async def frozen() -> AsyncIterator[tuple[PumpStationSimulator, AsyncModbusTcpClient]]:
    """A server whose physics stands still unless the test steps it."""
    async with PumpStationSimulator(port=0, tick=FROZEN, seed=5) as sim:
        client = await connect(sim.port)
        yield sim, client
        client.close()


@pytest.fixture
async def live() -> AsyncIterator[tuple[PumpStationSimulator, AsyncModbusTcpClient]]:
    """A server ticking fast: 20x real time, 20 ms ticks."""
    async with PumpStationSimulator(port=0, tick=0.02, speed=20.0, seed=5) as sim:
        client = await connect(sim.port)
        yield sim, client
        client.close()


Peer = tuple[PumpStationSimulator, AsyncModbusTcpClient]


async def write_count(client: AsyncModbusTcpClient) -> int:
    response = await client.read_input_registers(20, count=2)
    assert not response.isError()
    return from_u32(list(response.registers))


async def test_every_table_decodes_to_the_station_state(frozen: Peer) -> None:
    sim, client = frozen
    station = sim.station
    station.set_run(1, True)
    station.set_setpoint(2, 47.5)
    station.inject_fault(2)
    station.step(90.0)
    pump1 = station.pump(1)

    ir = list((await client.read_input_registers(0, count=22)).registers)  # spans gaps 7, 16-19
    assert from_f32(ir[0:2]) == pytest.approx(station.level, rel=1e-6)
    assert from_f32(ir[2:4]) == pytest.approx(station.inflow, rel=1e-6)
    assert from_f32(ir[4:6]) == pytest.approx(pump1.flow, rel=1e-6)
    assert ir[6] == round(station.outlet_pressure * 10) and ir[6] > 800
    assert from_u32(ir[8:10]) == int(pump1.run_hours * 100) == 2  # 0.025 h
    assert ir[10] == round(pump1.current * 10) and ir[10] > 50
    assert ir[11] == 4500
    assert from_u32(ir[12:14]) == 0 and ir[14] == 0 and ir[15] == 0
    assert ir[7] == 0 and ir[16:20] == [0, 0, 0, 0]
    assert from_u32(ir[20:22]) == 0

    di = (await client.read_discrete_inputs(0, count=5)).bits[:5]
    assert list(di) == [True, False, False, True, False]

    coils = (await client.read_coils(0, count=102)).bits[:102]
    assert list(coils[0:4]) == [True, False, False, False]
    assert not any(coils[4:100])
    assert list(coils[100:102]) == [False, True]

    hr = list((await client.read_holding_registers(0, count=4)).registers)
    assert from_f32(hr[0:2]) == 45.0 and from_f32(hr[2:4]) == 47.5


async def test_high_level_float_input(frozen: Peer) -> None:
    sim, client = frozen
    sim.station.level = 4.6
    assert (await client.read_discrete_inputs(4)).bits[0] is True


@pytest.mark.parametrize(
    ("table", "address", "count"),
    [
        ("ir", 0, 23),
        ("ir", 22, 1),
        ("hr", 4, 1),
        ("hr", 2, 3),
        ("di", 5, 1),
        ("di", 0, 6),
        ("co", 102, 1),
        ("co", 95, 8),
    ],
)
async def test_reads_past_a_table_end_get_exception_2(
    frozen: Peer, table: str, address: int, count: int
) -> None:
    _, client = frozen
    read = {
        "ir": client.read_input_registers,
        "hr": client.read_holding_registers,
        "di": client.read_discrete_inputs,
        "co": client.read_coils,
    }[table]
    response = await read(address, count=count)
    assert response.isError() and response.exception_code == 2


async def test_other_unit_ids_get_exception_11(frozen: Peer) -> None:
    _, client = frozen
    response = await client.read_input_registers(0, count=2, device_id=2)
    assert response.isError() and response.exception_code == 11


async def test_run_coil_starts_the_pump_and_it_ramps_to_setpoint(live: Peer) -> None:
    sim, client = live
    assert not (await client.write_coil(1, True)).isError()
    assert sim.station.pump(2).run_cmd

    async def running() -> bool:
        return bool((await client.read_discrete_inputs(2)).bits[0])

    async def at_setpoint() -> bool:
        return list((await client.read_input_registers(15)).registers) == [4500]

    await eventually(running)
    await eventually(at_setpoint)
    assert (await client.read_input_registers(14)).registers[0] > 50  # current above idle


async def test_float32_setpoint_write_is_applied(live: Peer) -> None:
    sim, client = live
    assert not (await client.write_registers(2, f32(32.5))).isError()
    assert sim.station.pump(2).setpoint == 32.5
    hr = list((await client.read_holding_registers(0, count=4)).registers)
    assert hr == f32(45.0) + f32(32.5)
    await client.write_coil(1, True)

    async def at_setpoint() -> bool:
        return list((await client.read_input_registers(15)).registers) == [3250]

    await eventually(at_setpoint)


async def test_both_setpoints_in_one_request(frozen: Peer) -> None:
    sim, client = frozen
    assert not (await client.write_registers(0, f32(26.0) + f32(49.0))).isError()
    assert [p.setpoint for p in sim.station.pumps] == [26.0, 49.0]
    assert sim.station.write_count == 1


@pytest.mark.parametrize("bad", [55.0, 24.9, 50.01, math.nan, math.inf])
async def test_out_of_range_setpoint_gets_exception_3_and_changes_nothing(
    frozen: Peer, bad: float
) -> None:
    sim, client = frozen
    response = await client.write_registers(0, f32(bad))
    assert response.isError() and response.exception_code == 3
    both = await client.write_registers(0, f32(30.0) + f32(bad))  # all or nothing
    assert both.isError() and both.exception_code == 3
    assert [p.setpoint for p in sim.station.pumps] == [45.0, 45.0]
    assert await write_count(client) == 0 == sim.station.write_count


async def test_unmapped_and_partial_writes_get_exception_2_and_change_nothing(
    frozen: Peer,
) -> None:
    sim, client = frozen
    refused = [
        await client.write_coil(4, True),
        await client.write_coil(99, True),
        await client.write_coil(102, True),
        await client.write_coils(0, [True] * 5),  # coil 4 is not in the map
        await client.write_register(0, 0x4200),  # half a float32
        await client.write_registers(1, f32(30.0)),  # straddles two setpoints
        await client.write_registers(4, f32(30.0)),
        await client.write_registers(2, f32(30.0) + [0]),
        await client.mask_write_register(address=0, and_mask=0xFFFF, or_mask=0),
    ]
    assert [(r.isError(), r.exception_code) for r in refused] == [(True, 2)] * len(refused)
    assert not any(p.run_cmd or p.fault for p in sim.station.pumps)
    assert [p.setpoint for p in sim.station.pumps] == [45.0, 45.0]
    assert await write_count(client) == 0


async def test_write_count_counts_accepted_writes_of_every_kind(frozen: Peer) -> None:
    sim, client = frozen
    accepted = [
        await client.write_coil(0, True),  # fc 5
        await client.write_coils(0, [False, True, True, False]),  # fc 15
        await client.write_registers(0, f32(40.0)),  # fc 16
        await client.readwrite_registers(
            read_address=0, read_count=4, write_address=2, values=f32(35.0)
        ),  # fc 23
        await client.write_coil(3, False),  # fault reset 0: accepted, does nothing
    ]
    assert not any(r.isError() for r in accepted)
    assert (await client.write_coil(7, True)).isError()  # refused: not counted
    assert await write_count(client) == 5 == sim.station.write_count
    assert [p.run_cmd for p in sim.station.pumps] == [False, True]
    assert [p.setpoint for p in sim.station.pumps] == [40.0, 35.0]
    assert sim.station.pump(1).fault is False  # coil 2 (fault reset) written 1 with no fault


async def test_sim_fault_coil_and_fault_reset(live: Peer) -> None:
    sim, client = live
    await client.write_coil(0, True)

    async def pump1_running() -> bool:
        return bool((await client.read_discrete_inputs(0)).bits[0])

    await eventually(pump1_running)
    assert not (await client.write_coil(100, True)).isError()
    assert (await client.read_coils(100)).bits[0] is True
    assert list((await client.read_discrete_inputs(0, count=2)).bits[:2]) == [
        await pump1_running(),
        True,
    ]

    async def stopped() -> bool:
        return not await pump1_running()

    await eventually(stopped)
    assert not (await client.write_coil(2, True)).isError()
    assert (await client.read_coils(2)).bits[0] is False  # momentary: reads back 0
    assert not sim.station.pump(1).fault
    await eventually(pump1_running)  # run command still on: restarts after the reset


async def test_stop_releases_the_port_and_start_rebinds_it() -> None:
    sim = PumpStationSimulator(port=0, tick=0.02, speed=20.0)
    await sim.start()
    port = sim.port
    client = await connect(port)
    assert not (await client.read_input_registers(0, count=2)).isError()
    await sim.stop()
    client.close()
    refused = AsyncModbusTcpClient("127.0.0.1", port=port, retries=0)
    assert not await refused.connect()
    refused.close()

    await sim.start()  # same object, same port
    assert sim.port == port
    client = await connect(port)
    assert not (await client.read_coils(0)).isError()
    client.close()
    await sim.stop()

    async with PumpStationSimulator(port=port, tick=0.02) as other:  # a new one, same port
        client = await connect(port)
        assert not (await client.read_discrete_inputs(0)).isError()
        client.close()
        assert other.port == port


async def test_start_on_a_busy_port_raises_oserror(frozen: Peer) -> None:
    sim, _ = frozen
    with pytest.raises(OSError):
        await PumpStationSimulator(port=sim.port, tick=FROZEN).start()


async def test_serve_logs_its_address_and_runs_until_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="citytwin.simulators.pump_station.server")
    task = asyncio.create_task(serve("127.0.0.1", 0, 3, 10.0, 1))
    pattern = re.compile(r"pump-station simulator \(Modbus TCP\) listening on 127\.0\.0\.1:(\d+) unit 3")

    async def logged() -> bool:
        return any(pattern.fullmatch(r.getMessage()) for r in caplog.records)

    await eventually(logged)
    match = next(m for r in caplog.records if (m := pattern.fullmatch(r.getMessage())))
    client = await connect(int(match.group(1)))
    assert not (await client.read_input_registers(0, count=2, device_id=3)).isError()
    client.close()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
