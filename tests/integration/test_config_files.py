"""config.pbtxt syntax (spec §3.11) end to end: every spelling of the same
configuration (repeated vs list fields, `:` before messages, `< >`,
comments and separators, string quoting and escapes, hex/octal integers,
numeric enums, bool spellings, field order, map entries) loads and renders
the same GET /v2/models/<m>/config; malformed files leave the model
UNAVAILABLE with `config.pbtxt:<line>:<col>` in its index reason.

One server per module serves all variants (resp. all broken models)."""
import re

import pytest

from conftest import Server
from schedutil import index_entry, model_config, write_model

# The reference configuration. Every variant below must mean exactly this.
CANONICAL = r'''
name: "{name}"
backend: "imageops"
max_batch_size: 8
input { name: "INPUT0" data_type: TYPE_INT32 dims: 4 dims: -1 }
input { name: "INPUT1" data_type: TYPE_INT32 dims: 4 dims: -1 allow_ragged_batch: false }
output { name: "OUTPUT0" data_type: TYPE_INT32 dims: 4 dims: -1 }
output { name: "OUTPUT1" data_type: TYPE_INT32 dims: 4 dims: -1 }
instance_group { count: 2 kind: KIND_CPU }
dynamic_batching {
  preferred_batch_size: 2
  preferred_batch_size: 4
  max_queue_delay_microseconds: 100
  default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 50000
                         allow_timeout_override: true max_queue_size: 16 }
}
parameters { key: "operation" value { string_value: "add_sub" } }
parameters { key: "note" value { string_value: "a\"b\\c\nd" } }
'''

VARIANTS = {
    "list-form": r'''
name: "{name}"
backend: "imageops"
max_batch_size: 8
input [ { name: "INPUT0", data_type: TYPE_INT32, dims: [ 4, -1 ] },
        { name: "INPUT1", data_type: TYPE_INT32, dims: [ 4, -1 ], allow_ragged_batch: false } ]
output [ { name: "OUTPUT0", data_type: TYPE_INT32, dims: [ 4, -1 ] },
         { name: "OUTPUT1", data_type: TYPE_INT32, dims: [ 4, -1 ] } ]
instance_group [ { count: 2, kind: KIND_CPU } ]
dynamic_batching {
  preferred_batch_size: [ 2, 4 ]
  max_queue_delay_microseconds: 100
  default_queue_policy { timeout_action: DELAY, default_timeout_microseconds: 50000,
                         allow_timeout_override: true, max_queue_size: 16 }
}
parameters [ { key: "operation", value: { string_value: "add_sub" } },
             { key: "note", value: { string_value: "a\"b\\c\nd" } } ]
''',
    "colon-before-messages": r'''
name: "{name}"
backend: "imageops"
max_batch_size: 8
input: { name: "INPUT0" data_type: TYPE_INT32 dims: 4 dims: -1 }
input: { name: "INPUT1" data_type: TYPE_INT32 dims: 4 dims: -1 allow_ragged_batch: false }
output: { name: "OUTPUT0" data_type: TYPE_INT32 dims: 4 dims: -1 }
output: { name: "OUTPUT1" data_type: TYPE_INT32 dims: 4 dims: -1 }
instance_group: [ { count: 2 kind: KIND_CPU } ]
dynamic_batching: {
  preferred_batch_size: 2 preferred_batch_size: 4 max_queue_delay_microseconds: 100
  default_queue_policy: { timeout_action: DELAY default_timeout_microseconds: 50000
                          allow_timeout_override: true max_queue_size: 16 }
}
parameters: { key: "operation" value: { string_value: "add_sub" } }
parameters: { key: "note" value: { string_value: "a\"b\\c\nd" } }
''',
    "angle-brackets": r'''
name: "{name}"
backend: "imageops"
max_batch_size: 8
input < name: "INPUT0" data_type: TYPE_INT32 dims: [ 4, -1 ] >
input < name: "INPUT1" data_type: TYPE_INT32 dims: [ 4, -1 ] allow_ragged_batch: false >
output < name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 4, -1 ] >
output: < name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 4, -1 ] >
instance_group [ < count: 2 kind: KIND_CPU > ]
dynamic_batching <
  preferred_batch_size: [ 2, 4 ] max_queue_delay_microseconds: 100
  default_queue_policy < timeout_action: DELAY default_timeout_microseconds: 50000
                         allow_timeout_override: true max_queue_size: 16 >
>
parameters < key: "operation" value < string_value: "add_sub" > >
parameters < key: "note" value < string_value: "a\"b\\c\nd" > >
''',
    "comments-and-separators": "\r\n".join([
        '# A model config with comments everywhere.',
        'name: "{name}"   # the folder name',
        'backend: "imageops";',
        '  max_batch_size:8,',
        '\tinput {  # first',
        '\t  name: "INPUT0"; data_type: TYPE_INT32; dims: 4, dims: -1;',
        '\t}',
        'input { name: "INPUT1", data_type: TYPE_INT32, dims: [4,-1], allow_ragged_batch: false };',
        '# output { name: "IGNORED" data_type: TYPE_FP32 dims: 1 }',
        'output { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 4 ,',
        '  -1 ] } , output { name: "OUTPUT1" data_type: TYPE_INT32 dims: [4, -1] }',
        'instance_group [ { count: 2 kind: KIND_CPU } ] # two instances',
        'dynamic_batching { preferred_batch_size: [2, 4]; max_queue_delay_microseconds: 100;',
        '  default_queue_policy { timeout_action: DELAY; default_timeout_microseconds: 50000;',
        '    allow_timeout_override: true; max_queue_size: 16; }; }',
        'parameters { key: "operation" value { string_value: "add_sub" } }  #',
        'parameters { key: "note" value { string_value: "a\\"b\\\\c\\nd" } }',
        '#',
    ]),
    "single-line": (r'name: "{name}" backend: "imageops" max_batch_size: 8 '
                    r'input { name: "INPUT0" data_type: TYPE_INT32 dims: [4, -1] } '
                    r'input { name: "INPUT1" data_type: TYPE_INT32 dims: [4, -1] allow_ragged_batch: false } '
                    r'output { name: "OUTPUT0" data_type: TYPE_INT32 dims: [4, -1] } '
                    r'output { name: "OUTPUT1" data_type: TYPE_INT32 dims: [4, -1] } '
                    r'instance_group { count: 2 kind: KIND_CPU } '
                    r'dynamic_batching { preferred_batch_size: [2, 4] max_queue_delay_microseconds: 100 '
                    r'default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 50000 '
                    r'allow_timeout_override: true max_queue_size: 16 } } '
                    r'parameters { key: "operation" value { string_value: "add_sub" } } '
                    r'parameters { key: "note" value { string_value: "a\"b\\c\nd" } }'),
    "string-quoting-and-escapes": r'''
name: '{name}'
backend: "image" 'ops'
max_batch_size: 8
input { name: 'INPUT0' data_type: TYPE_INT32 dims: [ 4, -1 ] }
input { name: "INP" "UT1" data_type: TYPE_INT32 dims: [ 4, -1 ] allow_ragged_batch: false }
output { name: "\117UTPUT0" data_type: TYPE_INT32 dims: [ 4, -1 ] }
output { name: "\x4fUTPUT1" data_type: TYPE_INT32 dims: [ 4, -1 ] }
instance_group { count: 2 kind: KIND_CPU }
dynamic_batching { preferred_batch_size: [ 2, 4 ] max_queue_delay_microseconds: 100
  default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 50000
                         allow_timeout_override: true max_queue_size: 16 } }
parameters { key: 'operation' value { string_value: 'add\x5fsub' } }
parameters { key: "note" value { string_value: 'a"b\134c\012d' } }
''',
    "numbers-enums-bools": r'''
name: "{name}"
backend: "imageops"
max_batch_size: 0x8
input { name: "INPUT0" data_type: 8 dims: [ 0x4, -1 ] }
input { name: "INPUT1" data_type: TYPE_INT32 dims: [ 04, -0x1 ] allow_ragged_batch: False }
output { name: "OUTPUT0" data_type: 8 dims: [ 4, -1 ] }
output { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 0x04, -1 ] }
instance_group { count: 0x2 kind: 2 }
dynamic_batching { preferred_batch_size: [ 02, 0X4 ] max_queue_delay_microseconds: 0144
  default_queue_policy { timeout_action: 1 default_timeout_microseconds: 0xC350
                         allow_timeout_override: t max_queue_size: 020 } }
parameters { key: "operation" value { string_value: "add_sub" } }
parameters { key: "note" value { string_value: "a\"b\\c\nd" } }
''',
    "field-order": r'''
parameters { key: "note" value { string_value: "a\"b\\c\nd" } }
dynamic_batching {
  default_queue_policy { max_queue_size: 16 allow_timeout_override: 1
                         default_timeout_microseconds: 50000 timeout_action: DELAY }
  max_queue_delay_microseconds: 100
  preferred_batch_size: 2 preferred_batch_size: 4
}
instance_group { kind: KIND_CPU count: 2 }
output { dims: [ 4, -1 ] data_type: TYPE_INT32 name: "OUTPUT0" }
output { dims: [ 4, -1 ] name: "OUTPUT1" data_type: TYPE_INT32 }
input { dims: [ 4, -1 ] data_type: TYPE_INT32 name: "INPUT0" }
input { allow_ragged_batch: false dims: [ 4, -1 ] name: "INPUT1" data_type: TYPE_INT32 }
max_batch_size: 8
parameters { value { string_value: "add_sub" } key: "operation" }
backend: "imageops"
name: "{name}"
''',
    "map-duplicate-key-last-wins": r'''
name: "{name}"
backend: "imageops"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 4, -1 ] },
        { name: "INPUT1" data_type: TYPE_INT32 dims: [ 4, -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 4, -1 ] },
         { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 4, -1 ] } ]
instance_group [ { count: 2 kind: KIND_CPU } ]
dynamic_batching { preferred_batch_size: [ 2, 4 ] max_queue_delay_microseconds: 100
  default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 50000
                         allow_timeout_override: true max_queue_size: 16 } }
parameters { key: "operation" value { string_value: "identity" } }
parameters { key: "note" value { string_value: "overwritten" } }
parameters { key: "operation" value { string_value: "add_sub" } }
parameters { key: "note" value { string_value: "a\"b\\c\nd" } }
''',
}


# Models checked field by field rather than against CANONICAL.
ESCAPES = r'''
name: "{name}"
backend: "imageops"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ -1 ] } ]
parameters { key: "operation" value { string_value: "identity" } }
parameters { key: "simple" value { string_value: "\a\b\f\n\r\t\v\\\'\"\?" } }
parameters { key: "octal_hex" value { string_value: "\101\x42\103\60\x7e" } }
parameters { key: "unicode" value { string_value: "caf\u00e9" } }
parameters { key: 'single' value { string_value: 'it\'s "quoted"' } }
'''

EXTREMES = r'''
name: "{name}"
backend: "imageops"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ -1 ] } ]
parameters { key: "operation" value { string_value: "identity" } }
dynamic_batching { preferred_batch_size: [ ] max_queue_delay_microseconds: 0xFFFFFFFFFFFFFFFF
  default_queue_policy { default_timeout_microseconds: 18446744073709551615 } }
'''


def model_name(variant):
    return "cfgv_" + variant.replace("-", "_")


def start_module_server(tmp_path_factory, models, *args):
    repo = tmp_path_factory.mktemp("models")
    for name, text in models.items():
        write_model(repo, name, text.replace("{name}", name))
    return Server(repo, args, wait_ready=False)


def stop_module_server(server):
    rc = server.stop()
    assert rc == 0, f"server exit status {rc}:\n{server.log()}"


@pytest.fixture(scope="module")
def variants_server(tmp_path_factory):
    models = {model_name(v): text for v, text in VARIANTS.items()}
    models["cfgv_canonical"] = CANONICAL
    models["cfgv_escapes"] = ESCAPES
    models["cfgv_extremes"] = EXTREMES
    s = start_module_server(tmp_path_factory, models, "--exit-on-error=false")
    yield s
    stop_module_server(s)


def normalized(cfg, name):
    """The config with the model's own name (and names derived from it, like
    the instance group's) replaced, so two models' configs can be compared."""
    if isinstance(cfg, dict):
        return {k: normalized(v, name) for k, v in cfg.items()}
    if isinstance(cfg, list):
        return [normalized(v, name) for v in cfg]
    if isinstance(cfg, str) and (cfg == name or cfg.startswith(name + "_")):
        return "<model>" + cfg[len(name):]
    return cfg


def test_canonical_config_loads_as_written(variants_server):
    cfg = model_config(variants_server, "cfgv_canonical")
    assert cfg["max_batch_size"] == 8
    assert [(t["name"], t["data_type"], t["dims"]) for t in cfg["input"]] == [
        ("INPUT0", "TYPE_INT32", [4, -1]), ("INPUT1", "TYPE_INT32", [4, -1])]
    assert [t["name"] for t in cfg["output"]] == ["OUTPUT0", "OUTPUT1"]
    assert [(g["count"], g["kind"]) for g in cfg["instance_group"]] == [(2, "KIND_CPU")]
    db = cfg["dynamic_batching"]
    assert db["preferred_batch_size"] == [2, 4]
    assert db["max_queue_delay_microseconds"] == 100
    assert db["default_queue_policy"] == {"timeout_action": "DELAY", "default_timeout_microseconds": 50000,
                                          "allow_timeout_override": True, "max_queue_size": 16}
    assert cfg["parameters"] == {"operation": {"string_value": "add_sub"},
                                 "note": {"string_value": 'a"b\\c\nd'}}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_syntax_variant_renders_like_canonical(variants_server, variant):
    name = model_name(variant)
    entry = index_entry(variants_server, name)
    assert entry.get("state") == "READY", entry
    want = normalized(model_config(variants_server, "cfgv_canonical"), "cfgv_canonical")
    got = normalized(model_config(variants_server, name), name)
    assert got == want


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_syntax_variant_serves_add_sub(variants_server, variant):
    r = variants_server.post(f"/v2/models/{model_name(variant)}/infer", body={"inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 4, 1], "data": [1, 2, 3, 4]},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 4, 1], "data": [10, 20, 30, 40]}]})
    assert r.status == 200, r.body
    outs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert outs == {"OUTPUT0": [11, 22, 33, 44], "OUTPUT1": [-9, -18, -27, -36]}


def test_string_escapes_decode_exactly(variants_server):
    params = model_config(variants_server, "cfgv_escapes")["parameters"]
    assert params["simple"] == {"string_value": "\a\b\f\n\r\t\v\\'\"?"}
    assert params["octal_hex"] == {"string_value": "ABC0~"}
    assert params["unicode"] == {"string_value": "caf\u00e9"}
    assert params["single"] == {"string_value": 'it\'s "quoted"'}


def test_uint64_extremes_and_empty_list_render_as_numbers(variants_server):
    db = model_config(variants_server, "cfgv_extremes")["dynamic_batching"]
    assert db["max_queue_delay_microseconds"] == 2**64 - 1
    assert db["default_queue_policy"]["default_timeout_microseconds"] == 2**64 - 1
    # An empty list is no preferred size: normalization fills max_batch_size.
    assert db["preferred_batch_size"] == [8]


# ---------------------------------------------------------------------------
# Malformed files
# ---------------------------------------------------------------------------

HEAD = 'name: "{name}"\nbackend: "imageops"\n'
IO = ('input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 4 ] } ]\n'
      'output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 4 ] } ]\n'
      'parameters { key: "operation" value { string_value: "identity" } }\n')

# name: (config text, 1-based line of the error, token whose first character
# is the error column or None when only the line is fixed, fragment of the
# message or None)
MALFORMED = {
    "scalar-without-colon": (HEAD + "max_batch_size 8\n" + IO, 3, "8", None),
    "list-without-colon": (HEAD + "max_batch_size: 8\n"
                           'input [ { name: "INPUT0" data_type: TYPE_INT32 dims [ 4 ] } ]\n', 4, "[ 4", None),
    "unknown-field": (HEAD + "max_batch_sise: 8\n" + IO, 3, None, "max_batch_sise"),
    "unknown-enum": (HEAD + "max_batch_size: 8\n"
                     'input [ { name: "INPUT0" data_type: TYPE_FLOAT dims: [ 4 ] } ]\n', 4, None, "TYPE_FLOAT"),
    "unterminated-string": ('name: "{name}"\nbackend: "imageops\nmax_batch_size: 8\n', 2, None, None),
    "int32-overflow": (HEAD + "max_batch_size: 3000000000\n" + IO, 3, None, None),
    "negative-unsigned": (HEAD + "max_batch_size: 8\n" + IO +
                          "dynamic_batching { max_queue_delay_microseconds: -1 }\n", 7, None, None),
    "string-for-integer": (HEAD + 'max_batch_size: "8"\n' + IO, 3, '"8"', None),
    "bad-bool": (HEAD + "max_batch_size: 8\n" + IO +
                 "dynamic_batching { preserve_ordering: yes }\n", 7, None, None),
    "non-repeated-twice": (HEAD + "max_batch_size: 8\nmax_batch_size: 4\n" + IO, 4, None, "multiple times"),
    "oneof-conflict": (HEAD + "max_batch_size: 8\n" + IO + "dynamic_batching { }\nsequence_batching { }\n",
                       8, None, None),
    "missing-close-brace": (HEAD + "max_batch_size: 8\n"
                            'input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 4 ] }\n'
                            'output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 4 ] } ]\n', 5, "output", None),
}


def bad_name(case):
    return "cfgbad_" + case.replace("-", "_")


@pytest.fixture(scope="module")
def malformed_server(tmp_path_factory):
    models = {bad_name(c): t[0] for c, t in MALFORMED.items()}
    models["cfgbad_control"] = HEAD + "max_batch_size: 8\n" + IO
    s = start_module_server(tmp_path_factory, models, "--exit-on-error=false")
    yield s
    stop_module_server(s)


def test_well_formed_control_model_loads(malformed_server):
    assert index_entry(malformed_server, "cfgbad_control")["state"] == "READY"


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_config_reports_line_and_column(malformed_server, case):
    text, line, token, fragment = MALFORMED[case]
    name = bad_name(case)
    entry = index_entry(malformed_server, name)
    assert entry.get("state") == "UNAVAILABLE", entry
    reason = entry.get("reason", "")
    m = re.search(r"config\.pbtxt:(\d+):(\d+)", reason)
    assert m, reason
    if line is not None:
        assert int(m.group(1)) == line, reason
    if token is not None:
        src_line = text.replace("{name}", name).split("\n")[line - 1]
        assert int(m.group(2)) == src_line.index(token) + 1, (reason, src_line)
    if fragment is not None:
        assert fragment in reason, reason
    assert malformed_server.get(f"/v2/models/{name}/ready").status == 400
