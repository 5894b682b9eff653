"""The plugin skeleton (containernetworking/cni pkg/skel/skel.go) and delegation to another plugin
(pkg/invoke): one JSON document on stdout, the spec's error JSON on failure, logs elsewhere."""
from __future__ import annotations

import io
import json
import logging
import os
import stat
import sys

import pytest

from calico_bgp.cni import delegate, error, skel
from calico_bgp.cni.error import CNIError
from calico_bgp.cni.result import IPConfig, Result

CONF = {"cniVersion": "1.0.0", "name": "net1", "type": "fake"}
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/c1", "CNI_IFNAME": "eth0",
       "CNI_PATH": "/nowhere"}


@pytest.fixture(autouse=True)
def _restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def invoke(handlers, environ=ENV, conf=CONF, stdin=None):
    out = io.StringIO()
    data = stdin if stdin is not None else json.dumps(conf).encode()
    code = skel.run("fake", handlers, environ=environ, stdin=io.BytesIO(data), stdout=out)
    lines = out.getvalue().splitlines()
    assert len(lines) <= 1, "at most one JSON document on stdout"
    return code, (json.loads(lines[0]) if lines else None)


def test_add_prints_the_result_in_the_configs_version():
    seen = []

    def add(req):
        seen.append(req)
        return Result(ips=(IPConfig("198.18.0.9/32"),))

    code, doc = invoke({"ADD": add}, conf={**CONF, "cniVersion": "0.4.0"})
    assert code == 0 and doc == {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "198.18.0.9/32"}],
                                 "dns": {}}
    assert seen[0].invocation.container_id == "c1" and seen[0].conf.name == "net1"


def test_del_check_gc_status_print_nothing():
    for command in ("DEL", "CHECK", "GC", "STATUS"):
        code, doc = invoke({command: lambda req: None}, {**ENV, "CNI_COMMAND": command},
                           conf={**CONF, "cniVersion": "1.1.0"})
        assert (code, doc) == (0, None), command


def test_version_needs_no_config_and_answers_in_the_asked_version():
    assert invoke({}, {"CNI_COMMAND": "VERSION"}, stdin=b"") == (0, {"cniVersion": "1.1.0",
                                                                      "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]})
    assert invoke({}, {"CNI_COMMAND": "VERSION"}, stdin=b'{"cniVersion": "0.4.0"}')[1]["cniVersion"] == "0.4.0"


@pytest.mark.parametrize("environ, stdin, code, names", [
    ({**ENV, "CNI_COMMAND": "FROB"}, None, error.INVALID_ENV, "FROB"),
    ({k: v for k, v in ENV.items() if k != "CNI_NETNS"}, None, error.INVALID_ENV, "CNI_NETNS"),
    (ENV, b'{"cniVersion": "1.0.0", "name": ', error.DECODE_FAILURE, "not JSON"),
    (ENV, json.dumps({**CONF, "cniVersion": "0.2.0"}).encode(), error.INCOMPATIBLE_VERSION, "0.2.0"),
    ({**ENV, "CNI_COMMAND": "GC"}, None, error.INCOMPATIBLE_VERSION, "GC"),
])
def test_bad_input_is_the_specs_error_json_and_exit_1(environ, stdin, code, names):
    called = []
    got, doc = invoke({"ADD": called.append, "GC": called.append}, environ, stdin=stdin)
    assert got == 1 and doc["code"] == code and names in doc["msg"] and called == []
    assert doc["cniVersion"] in ("1.0.0", "1.1.0")


def test_an_error_is_written_in_the_configs_version():
    def add(req):
        raise CNIError(error.TRY_AGAIN_LATER, "etcd unreachable", "http://127.0.0.1:1")

    assert invoke({"ADD": add}) == (1, {"cniVersion": "1.0.0", "code": 11, "msg": "etcd unreachable",
                                        "details": "http://127.0.0.1:1"})


def test_a_bug_is_error_999_not_a_traceback_on_stdout():
    code, doc = invoke({"ADD": lambda req: 1 / 0})
    assert code == 1 and doc["code"] == error.INTERNAL and "ZeroDivisionError" in doc["msg"]


def test_a_stray_print_and_the_logs_stay_off_stdout(capsys):
    def add(req):
        print("chatter")
        logging.getLogger("ipam").info("event=allocated")
        return Result()

    code, doc = invoke({"ADD": add}, conf={**CONF, "log_level": "debug"})
    assert code == 0 and doc["cniVersion"] == "1.0.0"
    err = capsys.readouterr().err
    assert "chatter" in err and "event=allocated" in err and "container=c1" in err


def test_logs_go_to_log_file_path_and_ignored_fields_are_named_once(tmp_path):
    path = tmp_path / "sub" / "cni.log"
    code, _ = invoke({"ADD": lambda req: Result()},
                     conf={**CONF, "log_file_path": str(path), "policy": {"type": "k8s"}, "num_queues": 2})
    assert code == 0
    for h in logging.getLogger().handlers:
        h.flush()
    text = path.read_text()
    assert text.count("event=cni_fields_ignored") == 1 and "fields=num_queues,policy" in text


def test_an_unusable_log_file_falls_back_to_stderr(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _ = invoke({"ADD": lambda req: Result()}, conf={**CONF, "log_file_path": str(blocker / "cni.log")})
    assert code == 0 and "event=cni_log_file_unusable" in capsys.readouterr().err


# --- delegation ---------------------------------------------------------------------------------
def plugin(tmp_path, name, body):
    """A fake plugin: a Python script that records its environment and stdin, then runs `body`."""
    p = tmp_path / name
    p.write_text(f"#!{sys.executable}\nimport json, os, sys\ndata = sys.stdin.read()\n"
                 f"open(os.path.join({str(tmp_path)!r}, 'seen.json'), 'w').write(json.dumps("
                 "{'env': dict(os.environ), 'stdin': data}))\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return p


def test_delegate_add_runs_the_plugin_from_cni_path_with_the_command_set(tmp_path):
    plugin(tmp_path, "fake-ipam", "print(json.dumps({'cniVersion': '1.0.0', 'ips': [{'address': '198.18.0.7/32'}]}))\n"
                                  "print('log line', file=sys.stderr)\n")
    environ = {**ENV, "CNI_COMMAND": "CHECK", "CNI_PATH": f"/nonexistent:{tmp_path}"}
    got = delegate.delegate("ADD", "fake-ipam", b'{"x": 1}', environ)
    assert got.ips == (IPConfig("198.18.0.7/32"),)
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["env"]["CNI_COMMAND"] == "ADD" and seen["env"]["CNI_CONTAINERID"] == "c1" and seen["stdin"] == '{"x": 1}'


def test_a_delegates_stderr_joins_ours_when_ours_is_in_memory(tmp_path, monkeypatch):
    """In the warm process an invocation's stderr is a buffer the executable prints: an exec'd IPAM
    plugin's log lines go there, not to the warm process's own stderr."""
    plugin(tmp_path, "fake-ipam", "print('host-local says hello', file=sys.stderr)\n")
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    assert delegate.delegate("DEL", "fake-ipam", b"{}", {**ENV, "CNI_PATH": str(tmp_path)}) is None
    assert buf.getvalue() == "host-local says hello\n"


def test_delegate_del_returns_nothing(tmp_path):
    plugin(tmp_path, "fake-ipam", "")
    assert delegate.delegate("DEL", "fake-ipam", b"{}", {**ENV, "CNI_PATH": str(tmp_path)}) is None


def test_a_delegates_error_comes_back_with_its_code(tmp_path):
    plugin(tmp_path, "fake-ipam", "print(json.dumps({'cniVersion': '1.0.0', 'code': 100, 'msg': 'pool exhausted'}))\n"
                                  "sys.exit(1)\n")
    with pytest.raises(CNIError) as info:
        delegate.delegate("ADD", "fake-ipam", b"{}", {**ENV, "CNI_PATH": str(tmp_path)})
    assert (info.value.code, info.value.msg) == (100, "pool exhausted")


def test_a_delegate_failing_without_error_json_is_an_io_failure(tmp_path):
    plugin(tmp_path, "fake-ipam", "print('panic: oops')\nsys.exit(2)\n")
    with pytest.raises(CNIError) as info:
        delegate.delegate("ADD", "fake-ipam", b"{}", {**ENV, "CNI_PATH": str(tmp_path)})
    assert info.value.code == error.IO_FAILURE and "exit 2" in info.value.msg and "panic" in info.value.details


def test_a_delegate_not_in_cni_path_is_named(tmp_path):
    with pytest.raises(CNIError) as info:
        delegate.delegate("ADD", "absent-ipam", b"{}", {**ENV, "CNI_PATH": str(tmp_path)})
    assert info.value.code == error.INVALID_CONFIG and "absent-ipam" in info.value.msg and str(tmp_path) in info.value.msg
    with pytest.raises(CNIError):
        delegate.find("../escape", (str(tmp_path),))


def test_a_non_executable_file_is_not_a_plugin(tmp_path):
    (tmp_path / "fake-ipam").write_text("#!/bin/sh\n")
    with pytest.raises(CNIError):
        delegate.find("fake-ipam", (str(tmp_path),))
    assert os.path.exists(tmp_path / "fake-ipam")


def test_our_own_ipam_plugin_runs_in_process_once_found_in_cni_path(tmp_path):
    """The executable in CNI_PATH says code 42 if run; in process, calico-bgp-ipam's own STATUS answers
    (etcd at a closed port: 50). CALICO_BGP_CNI_EXEC_DELEGATES=1 execs it instead."""
    plugin(tmp_path, "calico-bgp-ipam", "print(json.dumps({'code': 42, 'msg': 'exec'}))\nsys.exit(1)\n")
    conf = json.dumps({"cniVersion": "1.1.0", "name": "n", "type": "calico-bgp-cni",
                       "etcd_endpoints": "http://127.0.0.1:9", "nodename": "n1"}).encode()
    environ = {"CNI_PATH": str(tmp_path)}
    with pytest.raises(CNIError) as info:
        delegate.delegate("STATUS", "calico-bgp-ipam", conf, environ)
    assert info.value.code == error.NOT_AVAILABLE and "127.0.0.1:9" in info.value.msg
    with pytest.raises(CNIError) as info:
        delegate.delegate("STATUS", "calico-bgp-ipam", conf, {**environ, "CALICO_BGP_CNI_EXEC_DELEGATES": "1"})
    assert (info.value.code, info.value.msg) == (42, "exec")
    (tmp_path / "calico-bgp-ipam").unlink()
    with pytest.raises(CNIError) as info:
        delegate.delegate("STATUS", "calico-bgp-ipam", conf, environ)
    assert info.value.code == error.INVALID_CONFIG and "not found in CNI_PATH" in info.value.msg
