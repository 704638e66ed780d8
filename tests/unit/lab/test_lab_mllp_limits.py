"""The analyser port's allow-lists and its choice of which idle connection
makes room (mllp.py), and their settings (config.py)."""

from __future__ import annotations

import pytest
from yigongti_lab.config import LabSettings
from yigongti_lab.hl7_results import AckCode, ResultsTranslator
from yigongti_lab.mllp import MllpLimits, _Connection, _Port, networks


@pytest.mark.parametrize(("peers", "host", "allowed"), [
    (("127.0.0.0/8", "::1/128"), "127.0.0.1", True),
    (("127.0.0.0/8", "::1/128"), "::1", True),
    (("127.0.0.0/8", "::1/128"), "10.1.2.3", False),
    (("10.1.2.0/24",), "10.1.2.77", True),
    (("10.1.2.0/24",), "::ffff:10.1.2.77", True),  # IPv4-mapped, on a dual-stack socket
    (("10.1.2.0/24",), "10.1.3.1", False),
    (("fd00::/8",), "fd00::5%eth0", True),
    (("10.1.2.0/24",), "", False),  # not an IP peer
])
def test_peers_are_allowed_by_address_or_network(peers, host, allowed):
    assert MllpLimits(allowed_peers=networks(peers)).allows(host) is allowed


def test_settings_give_the_limits_and_star_admits_any_peer(monkeypatch):
    monkeypatch.setenv("MLLP_ALLOWED_PEERS", "10.1.2.0/24, 10.9.9.9")
    monkeypatch.setenv("MLLP_MAX_CONNECTIONS_PER_PEER", "2")
    monkeypatch.setenv("MLLP_ANALYSERS", "BS-2000M^Mindray, XN-1000")
    settings = LabSettings()
    limits = settings.mllp_limits()
    assert limits.allows("10.9.9.9") and not limits.allows("10.9.9.8")
    assert limits.max_connections_per_peer == 2
    assert settings.mllp_senders() == ["BS-2000M^Mindray", "XN-1000"]
    monkeypatch.setenv("MLLP_ALLOWED_PEERS", "*")
    monkeypatch.setenv("MLLP_ANALYSERS", "")
    assert LabSettings().mllp_limits().allows("203.0.113.9")
    assert LabSettings().mllp_senders() is None
    monkeypatch.setenv("MLLP_ALLOWED_PEERS", "not-an-address")
    with pytest.raises(ValueError):
        LabSettings().mllp_limits()


class _Writer:
    closed = False

    def close(self) -> None:
        self.closed = True


def _conn(peer: str, at: float, *, proven=False, busy=False) -> _Connection:
    return _Connection(_Writer(), peer, at, proven=proven, busy=busy)


def test_room_is_made_from_idle_never_proven_connections_first():
    port = _Port(MllpLimits(max_connections_per_peer=3, max_connections=10))
    analyser = _conn("10.0.0.5", 0.0, proven=True)  # the oldest, but carries messages
    strangers = [_conn("10.0.0.5", t) for t in (1.0, 2.0)]
    for c in (analyser, *strangers):
        assert port.admit(c)
    newcomer = _conn("10.0.0.5", 3.0)
    assert port.admit(newcomer)
    assert strangers[0].writer.closed and not analyser.writer.closed
    assert port.open == {analyser, strangers[1], newcomer}


def test_with_only_proven_connections_the_longest_idle_goes_and_busy_ones_stay():
    port = _Port(MllpLimits(max_connections_per_peer=2, max_connections=10))
    busy = _conn("10.0.0.5", 0.0, proven=True, busy=True)
    dead = _conn("10.0.0.5", 1.0, proven=True)  # an analyser's connection that died silently
    for c in (busy, dead):
        assert port.admit(c)
    assert port.admit(_conn("10.0.0.5", 5.0))  # the analyser reconnects
    assert dead.writer.closed and not busy.writer.closed
    all_busy = _Port(MllpLimits(max_connections_per_peer=1, max_connections=10))
    assert all_busy.admit(_conn("10.0.0.5", 0.0, busy=True))
    assert not all_busy.admit(_conn("10.0.0.5", 1.0))


def test_the_total_limit_takes_room_from_other_peers():
    port = _Port(MllpLimits(max_connections_per_peer=5, max_connections=2))
    a, b = _conn("10.0.0.1", 0.0), _conn("10.0.0.2", 1.0, proven=True)
    assert port.admit(a) and port.admit(b)
    assert port.admit(_conn("10.0.0.3", 2.0))
    assert a.writer.closed and not b.writer.closed


def test_a_sender_off_the_analyser_list_is_refused_by_the_translator():
    translator = ResultsTranslator(allowed_senders=["BS-2000M^Mindray", "XN-1000"])
    message = ("MSH|^~\\&|{}|LIS|652325-L01|20240315103000||ORU^R01|M-1|P|2.5.1\r"
               "OBR|1||B24031500017|^^^CHEM\r"
               "OBX|1|NM|K^Potassium^L||4.52|mmol/L||N|||F\r")
    for sender, code in (("BS-2000M|Mindray", AckCode.AA), ("BS-2000M|Other", AckCode.AR),
                         ("XN-1000|SYSMEX", AckCode.AA), ("EVIL|", AckCode.AR)):
        t = translator.translate(message.format(sender).encode())
        assert t.ack_code is code, (sender, t.errors)
        if code is AckCode.AR:
            assert t.errors[0].reason == "sender_not_allowed"
