"""
What the test suites share, so each real thing is started and used one way
(the fixtures that hand these out stay in the suites' conftest.py files):

- L{tests.support.processes}: every child process (parent-death signal,
  output watched line by line, stopped and reaped);
- L{tests.support.twistd}: a real C{twistd -n txvnc}, API and/or proxy,
  workers, TLS listeners, ready from its log, stopped cleanly;
- L{tests.support.mint}: C{POST /v1/tokens}, over HTTP or in memory;
- L{tests.support.cli}: the C{txvnc} command;
- L{tests.support.browser}: a WebSocket client standing in for noVNC;
- L{tests.support.fakevnc}: a scriptable stand-in VNC server in this process;
- L{tests.support.vncservers}: real VNC servers (qemu, Xtigervnc, x11vnc);
- L{tests.support.redis_server}: a real redis-server;
- L{tests.support.logscan}: the end-of-session check that no log holds a
  secret.
"""
