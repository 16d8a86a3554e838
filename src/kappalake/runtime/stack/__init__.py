"""The embedded local stack: one module per service, each a child process on 127.0.0.1 with its state
under ``$KAPPALAKE_HOME/stack``.

- :mod:`.broker`: the Apache Kafka broker (KRaft), always.

Every service follows one contract: ``up`` (start unless running, wait until ready) → ``status`` →
``down``, ports, pid and log file recorded in its state file.
"""

from kappalake.runtime.stack.broker import BrokerInfo, LocalStack, StackState, StackStatus

__all__ = ["BrokerInfo", "LocalStack", "StackState", "StackStatus"]
