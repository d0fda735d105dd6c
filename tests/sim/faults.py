"""Random faults for seeded simulation runs (:class:`tests.sim.cluster.Sim` with ``faults``).

One fault every 15-45 s of simulated time, drawn from the mix below; some schedule a second
fault soon after (a leader that dies while replication is stalled or while its keep-alives
fail). A Sim modelling synchronous replication also draws operator changes of the dynamic
configuration (:data:`SYNC_KINDS`). Every draw comes from the Sim's seeded generator, so a
run depends on its seed alone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.sim.cluster import Sim

KINDS = ("node_death", "agent_death", "postmaster_kill", "partition", "clean_stop",
         "leader_node_death", "replication_stall", "keepalive_broken", "store_extends_sessions",
         "switchover", "switchover", "restart", "reinit")
SYNC_KINDS = ("sync_mode_change", "sync_node_count")
NEXT_SYNC_MODE = {"off": "on", "on": "quorum", "quorum": "off"}


class Faults:
    """Draws and applies one fault per :meth:`inject` call."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim

    def inject(self) -> None:
        sim, rng = self.sim, self.sim.rng
        live = [m for m in sim.members.values() if m.agent_alive]
        if not live:
            return
        m = rng.choice(live)
        kind = rng.choice(KINDS + SYNC_KINDS if sim.sync_mode is not None else KINDS)
        if kind == "leader_node_death":
            m = next((x for x in live if sim.leader == x.name), m)
            kind = "node_death"
        if kind == "agent_death" and rng.random() < 0.5:  # most often the leader's agent
            m = next((x for x in live if sim.leader == x.name), m)
        sim.log.append(f"{sim.now():.2f} fault {kind} on {m.name}")
        if kind == "node_death":
            sim.kill_agent(m.name)
            sim.schedule(rng.uniform(5, 30), m.name, "restart_agent")
        elif kind == "agent_death":
            sim.kill_agent_only(m.name)
            sim.schedule(rng.uniform(5, 30), m.name, "restart_agent")
        elif kind == "postmaster_kill":
            m.pg.crash()
            sim.schedule_agent(rng.uniform(0.01, 0.5), m, "cycle")
        elif kind == "partition":
            m.partitioned = True
            m.pg.isolated = rng.random() < 0.5  # from the other nodes too, not only the DCS
            sim.schedule(rng.uniform(2, 25), m.name, "heal")
        elif kind == "clean_stop":
            sim.clean_stop(m.name)
            sim.schedule(rng.uniform(5, 30), m.name, "restart_agent")
        elif kind == "keepalive_broken":
            assert m.kv is not None
            m.kv.keepalive_broken_until = sim.now() + rng.uniform(2, 20)
            if rng.random() < 0.5:  # and its postmaster dies meanwhile
                sim.schedule(rng.uniform(0.5, 5), "*", "fault")
        elif kind == "switchover":
            self.switchover()
        elif kind == "restart":
            m.restart_requested = True
            sim.schedule_agent(0.01, m, "cycle")
        elif kind == "reinit":
            m.reinit_requested = True
            sim.schedule_agent(0.01, m, "cycle")
        elif kind == "store_extends_sessions":
            extend_sessions(sim)
        elif kind in SYNC_KINDS:
            self.patch_sync_config(kind)
        elif kind == "replication_stall":
            for other in live:
                if other is not m and rng.random() < 0.7:
                    other.pg.stalled_until = sim.now() + rng.uniform(5, 60)
            # the leader often dies while replication is stalled
            if rng.random() < 0.5:
                sim.schedule(rng.uniform(1, 10), "*", "fault")

    def switchover(self) -> None:
        """An operator request: to a named member or any, now or a little later, naming the
        current leader or (a stale request) someone else."""
        sim, rng = self.sim, self.sim.rng
        names = list(sim.members)
        request: dict[str, Any] = {}
        if rng.random() < 0.9:
            request["leader"] = sim.leader or rng.choice(names)
        if rng.random() < 0.7 or "leader" not in request:
            request["member"] = rng.choice(names)
        if rng.random() < 0.2:
            at = sim.wall_time() + rng.uniform(1, 20)
            request["scheduled_at"] = datetime.fromtimestamp(at, UTC).isoformat()
        sim.run_async(sim.operator.write_failover(request))


    def patch_sync_config(self, kind: str) -> None:
        """An operator's PATCH of the dynamic configuration: synchronous mode off -> on ->
        quorum -> off, or another ``synchronous_node_count`` (1-3)."""
        sim, rng = self.sim, self.sim.rng
        config, revision = sim.run_async(sim.operator.read_config())
        if config is None:
            return  # not bootstrapped yet
        if kind == "sync_mode_change":
            mode = str(sim.dcs_settings().synchronous_mode)
            config["synchronous_mode"] = NEXT_SYNC_MODE[mode]
        else:
            config["synchronous_node_count"] = rng.randint(1, 3)
        sim.log.append(f"{sim.now():.2f} config synchronous_mode="
                       f"{config.get('synchronous_mode')} synchronous_node_count="
                       f"{config.get('synchronous_node_count')}")
        sim.run_async(sim.operator.compare_and_set_config(config, revision))


def extend_sessions(sim: Sim) -> None:
    """Every live session gets a full TTL from now, as etcd does when it elects a new raft
    leader (reaches into the memory backend: it has no public call for this)."""
    for session in sim.backend._sessions.values():
        session.expires = sim.now() + session.ttl
