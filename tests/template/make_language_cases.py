#!/usr/bin/env python3
"""Renders the language cases (small templates, one construct, filter, test or whitespace rule each) with the
reference engine -- jinja2 set up as transformers' apply_chat_template sets it up, exactly as
../shared/templates/render_fixtures.py does -- and writes tests/template/language_cases.json, which
test_template replays byte for byte. Rerun after adding cases (needs python3-jinja2):

    python3 tests/template/make_language_cases.py
"""
import datetime, json, os, sys

import jinja2
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

FIXED_NOW = datetime.datetime(2024, 7, 26, 12, 0, 0)


class GenerationTag(Extension):
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return FIXED_NOW.strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Hello!", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
            {"role": "user", "content": "  padded \u00e9\u00e8 text  "}]
CONTEXT = {"messages": MESSAGES, "n": 7, "f": 2.5, "s": "Hello, World", "u": "h\u00e9llo w\u00f6rld \u2713",
           "xs": [3, 1, 2], "words": ["b", "A", "c", "a"], "d": {"b": 2, "a": 1, "c": None},
           "nested": {"k": [1, {"z": True, "y": [None, 1.5]}]}, "t": True, "e": "", "none": None,
           "people": [{"name": "Ann", "age": 31, "tag": "x"}, {"name": "bob", "age": 25},
                      {"name": "Cid", "age": 31, "tag": None}]}

# (name, template). Each renders with CONTEXT.
CASES = [
    # ---- output, literals, operators ----
    ("print_int", "{{ n }}|{{ -n }}|{{ +n }}|{{ n * 2 }}|{{ n / 2 }}|{{ n // 2 }}|{{ n % 3 }}|{{ -n // 2 }}|{{ -n % 3 }}|{{ 2 ** 10 }}|{{ 2 ** -1 }}"),
    ("print_float", "{{ f }}|{{ f * 2 }}|{{ 1.0 }}|{{ 0.1 + 0.2 }}|{{ 1e20 }}|{{ 1.5e-7 }}|{{ 123456789.0 * 1000000000 }}|{{ 10 / 4 }}|{{ 7.5 // 2 }}|{{ -7.5 % 2 }}|{{ 1_000 }}"),
    ("print_literals", "{{ true }}|{{ True }}|{{ false }}|{{ none }}|{{ None }}|{{ 'a' 'b' }}|{{ \"q\" }}|{{ [1, 'x', none, true, 1.5] }}|{{ (1,) }}|{{ (1, 2) }}|{{ () }}|{{ {'a': 1, 2: 'b'} }}"),
    ("print_repr_quotes", "{{ ['it\\'s', \"say \\\"hi\\\"\", 'both \\' \"', 'tab\\t', 'nl\\n', 'back\\\\slash', '\u00e9'] }}"),
    ("string_escapes", "{{ 'a\\tb\\nc\\\\d\\x41\\u00e9\\'\\\"' }}|{{ 'unknown \\d escape' }}"),
    ("concat_tilde", "{{ 'a' ~ 1 ~ none ~ true ~ undefined_var ~ [1] }}"),
    ("string_plus_and_times", "{{ 'ab' + 'cd' }}|{{ 'ab' * 3 }}|{{ 3 * 'x' }}|{{ [1] * 3 }}|{{ [1, 2] + [3] }}|{{ 'x' * 0 }}|{{ 'x' * -1 }}"),
    ("comparisons", "{{ 1 < 2 }}{{ 2 <= 2 }}{{ 3 > 4 }}{{ 4 >= 4 }}{{ 1 == 1.0 }}{{ 1 != 1 }}{{ 'a' < 'b' }}{{ [1, 2] < [1, 3] }}{{ 1 < 2 < 3 }}{{ 3 > 2 > 4 }}{{ true == 1 }}{{ (1, 2) == [1, 2] }}{{ none == none }}"),
    ("logic", "{{ true and 'x' }}|{{ false and 'x' }}|{{ 0 or 'y' }}|{{ 'z' or 'y' }}|{{ not e }}|{{ not s }}|{{ none or [] or 'last' }}|{{ e and 1 }}"),
    ("membership", "{{ 'ell' in s }}{{ 'x' in s }}{{ 2 in xs }}{{ 5 not in xs }}{{ 'a' in d }}{{ 'z' in d }}{{ 'b' not in d }}"),
    ("inline_if", "{{ 'yes' if t else 'no' }}|{{ 'yes' if e else 'no' }}|{{ 'only' if e }}|{{ 1 if n > 5 else 2 if n > 3 else 3 }}"),
    ("precedence", "{{ 1 + 2 * 3 }}|{{ (1 + 2) * 3 }}|{{ 2 ** 3 ** 2 }}|{{ -2 ** 2 }}|{{ 1 ~ 2 * 3 }}|{{ not 1 == 2 }}|{{ -xs|length }}|{{ 10 - 2 - 3 }}|{{ 2 * 3 % 4 }}"),
    # ---- attribute / subscript / slicing ----
    ("subscripts", "{{ messages[0].role }}|{{ messages[0]['content'] }}|{{ messages[-1].role }}|{{ nested.k[1].y[1] }}|{{ nested['k'][0] }}|{{ xs.0 }}|{{ s[0] }}|{{ s[-1] }}|{{ u[1] }}"),
    ("slices", "{{ xs[1:] }}|{{ xs[:-1] }}|{{ xs[::-1] }}|{{ xs[::2] }}|{{ s[2:5] }}|{{ s[::-1] }}|{{ u[1:4] }}|{{ u[::-1] }}|{{ xs[5:] }}|{{ xs[-10:2] }}|{{ s[-3:] }}|{{ xs[2:0:-1] }}|{{ (1,2,3)[1:] }}"),
    ("missing_is_undefined", "[{{ d.zzz }}][{{ d['zzz'] }}][{{ xs[10] }}][{{ none.x }}][{{ messages[0].nope is defined }}][{{ n.attr }}]"),
    ("dict_methods", "{{ d.get('a') }}|{{ d.get('zz') }}|{{ d.get('zz', 5) }}|{{ d.keys() | list }}|{{ d.values() | list }}|{{ d.items() | list }}|{{ d.items() }}|{{ d.keys() }}|{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}"),
    ("string_methods", "{{ s.upper() }}|{{ s.lower() }}|{{ '  x  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '  x '.lstrip() }}|{{ ' x  '.rstrip() }}|{{ s.split(', ') }}|{{ ' a  b '.split() }}|{{ 'a,b,c'.split(',', 1) }}|{{ 'a,b,c'.rsplit(',', 1) }}|{{ s.startswith('Hell') }}|{{ s.endswith(('x', 'ld')) }}|{{ s.replace('l', 'L') }}|{{ s.replace('l', 'L', 2) }}|{{ s.find('o') }}|{{ s.rfind('o') }}|{{ s.find('zz') }}|{{ s.count('l') }}|{{ 'hello world'.title() }}|{{ 'hELLO'.capitalize() }}|{{ 'a\\nb\\r\\nc'.splitlines() }}|{{ '-'.join(['a', 'b']) }}|{{ '42'.isdigit() }}|{{ 'ab'.isalpha() }}|{{ 'x'.center(5, '*') }}|{{ 'x'.ljust(3) }}|"),
    ("string_format_method", "{{ '{}|{}'.format(1, 'a') }}|{{ '{0}-{1}-{0}'.format('x', 2) }}|{{ '{name}!'.format(name='n') }}|{{ '{0!r}'.format('q') }}|{{ '{:>6}|{:<4}|{:^7}'.format('ab', 'c', 'mid') }}|{{ '{:05d}|{:.2f}|{:,}'.format(42, 3.14159, 1234567) }}|{{ '{x[0]}'.format(x=xs) }}|{{ '{{literal}}'.format() }}|{{ '{:+d}|{:x}|{:.1%}'.format(5, 255, 0.25) }}"),
    ("unicode_string_methods", "{{ u | length }}|{{ u.find('w') }}|{{ u.split(' ') }}|{{ u.upper() }}|{{ u.startswith('h\u00e9') }}|{{ u | reverse }}|{{ u | list | length }}"),
    # ---- statements ----
    ("if_elif_else", "{% for i in [1, 2, 3, 4] %}{% if i == 1 %}one{% elif i == 2 %}two{% elif i == 3 %}three{% else %}many{% endif %} {% endfor %}"),
    ("for_loop_vars", "{% for x in xs %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.first }}/{{ loop.last }}/{{ loop.length }}/{{ loop.previtem }}/{{ loop.nextitem }}/{{ loop.cycle('a', 'b') }};{% endfor %}"),
    ("for_else", "{% for x in [] %}item{% else %}empty{% endfor %}|{% for x in xs %}{{ x }}{% else %}empty{% endfor %}"),
    ("for_filter_condition", "{% for x in xs if x > 1 %}{{ x }}:{{ loop.index }}/{{ loop.length }} {% endfor %}"),
    ("for_unpacking", "{% for k, v in d | dictsort %}{{ k }}={{ v }} {% endfor %}|{% for a, b in [(1, 2), [3, 4]] %}{{ a + b }} {% endfor %}|{% for (a, b) in [[5, 6]] %}{{ a * b }}{% endfor %}"),
    ("for_over_dict_and_string", "{% for k in d %}{{ k }}{% endfor %}|{% for c in 'ab\u00e9' %}[{{ c }}]{% endfor %}|{% for x in undefined_thing %}never{% endfor %}"),
    ("for_scoping", "{% set x = 'outer' %}{% for i in [1, 2] %}{{ x }}{% set x = 'inner' ~ i %}{{ x }} {% endfor %}{{ x }}"),
    ("nested_loops", "{% for a in [1, 2] %}{% set outer = loop %}{% for b in 'xy' %}{{ outer.index }}{{ b }}{{ loop.index }} {% endfor %}{% endfor %}"),
    ("break_continue", "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}"),
    ("set_and_if_scope", "{% if true %}{% set y = 5 %}{% endif %}{{ y }}|{% set a, b = 1, 2 %}{{ a }}{{ b }}|{% set t = 1, 2 %}{{ t }}"),
    ("block_set", "{% set block %}  Hello {{ s }}  {% endset %}[{{ block }}]|{% set trimmed | trim | upper %}  x y  {% endset %}[{{ trimmed }}]"),
    ("namespace", "{% set ns = namespace(count=0, items=[]) %}{% for x in xs %}{% set ns.count = ns.count + x %}{% set ns.items = ns.items + [x * 2] %}{% endfor %}{{ ns.count }} {{ ns.items }} {{ ns.missing is defined }}"),
    ("macro_basic", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Ann') }}|{{ greet('Bob', '?') }}|{{ greet(punct='.', name='Cy') }}|{{ greet() }}"),
    ("macro_recursion", "{% macro render(v) %}{% if v is mapping %}{{ '{' }}{% for k, x in v.items() %}{{ k }}:{{ render(x) }}{% if not loop.last %},{% endif %}{% endfor %}{{ '}' }}{% elif v is iterable and v is not string %}[{% for x in v %}{{ render(x) }}{% if not loop.last %},{% endif %}{% endfor %}]{% else %}{{ v }}{% endif %}{% endmacro %}{{ render(nested) }}"),
    ("macro_sees_globals_late", "{% set g = 1 %}{% macro show() %}{{ g }}{% endmacro %}{{ show() }}{% set g = 2 %}{{ show() }}"),
    ("macro_varargs_kwargs", "{% macro m(a) %}{{ a }}|{{ varargs }}|{{ kwargs }}{% endmacro %}{{ m(1, 2, 3, k='v') }}"),
    ("call_block", "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}bold {{ n }}{% endcall %}|{% macro each(xs) %}{% for x in xs %}{{ caller(x) }}{% endfor %}{% endmacro %}{% call(item) each([1, 2]) %}({{ item }}){% endcall %}"),
    ("filter_block", "{% filter upper %}hello {{ s }}{% endfilter %}|{% filter trim %}   spaced   {% endfilter %}|"),
    ("raw_block", "{% raw %}{{ not evaluated }} {% if %}{% endraw %}|{{ 'after' }}"),
    ("generation_block", "{% generation %}gen {{ n }}{% endgeneration %}|"),
    ("with_block", "{% with a = 1, b = n %}{{ a + b }}{% endwith %}|{{ a is defined }}"),
    ("comments", "a{# a comment #}b{#- trimmed -#}  c {# multi\nline #}d"),
    # ---- whitespace control ----
    ("trim_blocks", "{% if true %}\nline\n{% endif %}\nafter\n"),
    ("lstrip_blocks", "start\n    {% if true %}\n    indented\n    {% endif %}\nend"),
    ("lstrip_not_for_print", "x\n    {{ 'printed' }}\n    {# comment #}\ny"),
    ("dash_control", "a  \n  {%- if true -%}  \n  b  \n  {%- endif -%}  \n  c|  {{- 'd' -}}  |"),
    ("plus_disables_lstrip", "x\n    {%+ if true %}kept{% endif %}\n"),
    ("tag_not_alone_on_line", "text {% if true %}in{% endif %} more\n  {% if true %}x{% endif %}\n"),
    ("trailing_newline_dropped", "one\ntwo\n"),
    ("crlf_newlines", "a\r\n{% if true %}\r\nb\r\n{% endif %}\r\nc"),
    ("dash_in_print", "[  {{- n -}}  ]|[{{ n -}}\n\n]|[\n{{- n }}]"),
    ("comment_lstrip_trim", "a\n  {# c #}\nb\n{#- c -#}\n\nc"),
    ("raw_whitespace", "a\n  {% raw %}  {{ x }}  {% endraw %}\nb|{%- raw -%}  y  {%- endraw -%}  |"),
    # ---- tests ----
    ("tests_types", "{{ n is number }}{{ f is number }}{{ t is number }}{{ n is integer }}{{ f is integer }}{{ t is integer }}{{ f is float }}{{ s is string }}{{ d is mapping }}{{ xs is sequence }}{{ s is sequence }}{{ d is sequence }}{{ n is sequence }}{{ xs is iterable }}{{ n is iterable }}{{ t is boolean }}{{ n is boolean }}{{ range is callable }}{{ n is callable }}"),
    ("tests_values", "{{ none is none }}{{ e is none }}{{ t is true }}{{ 1 is true }}{{ false is false }}{{ 0 is false }}{{ n is odd }}{{ n is even }}{{ 9 is divisibleby 3 }}{{ 9 is divisibleby(4) }}{{ n is defined }}{{ zz is defined }}{{ zz is undefined }}{{ n is not none }}"),
    ("tests_comparison", "{{ 1 is eq 1 }}{{ 1 is equalto 2 }}{{ 1 is ne 2 }}{{ 1 is lt 2 }}{{ 2 is gt 1 }}{{ 2 is le 2 }}{{ 2 is ge 3 }}{{ 2 is in xs }}{{ 'e' is in s }}{{ 'abc' is lower }}{{ 'ABC' is upper }}{{ none is sameas none }}"),
    # ---- filters ----
    ("filter_default", "{{ zz | default('dflt') }}|{{ zz | d('short') }}|{{ e | default('empty') }}|{{ e | default('empty', true) }}|{{ none | default('n') }}|{{ zz | default }}|{{ n | default(1) }}"),
    ("filter_length_count", "{{ xs | length }}|{{ s | length }}|{{ d | count }}|{{ zz | length }}|{{ u | length }}"),
    ("filter_trim_case", "[{{ '  x y  ' | trim }}][{{ 'xxyxx' | trim('x') }}][{{ s | upper }}][{{ s | lower }}][{{ 'hello big-world (x)' | title }}][{{ 'hELLO wORLD' | capitalize }}][{{ zz | trim }}][{{ none | upper }}]"),
    ("filter_join", "{{ xs | join }}|{{ xs | join(', ') }}|{{ people | join(' ', attribute='name') }}|{{ [1, none, 'x'] | join('-') }}"),
    ("filter_first_last", "{{ xs | first }}|{{ xs | last }}|{{ s | first }}|{{ [] | first }}|{{ d | first }}|{{ people | map(attribute='name') | first }}"),
    ("filter_list_string", "{{ s[:3] | list }}|{{ d | list }}|{{ xs | string }}|{{ n | string ~ 'x' }}|{{ none | string }}"),
    ("filter_int_float", "{{ '42' | int }}|{{ '4.7' | int }}|{{ 'x' | int }}|{{ 'x' | int(7) }}|{{ 3.99 | int }}|{{ '3' | float }}|{{ 'x' | float }}|{{ n | float }}|{{ ' 12 ' | int }}|{{ '0x1A' | int(0, 16) }}|{{ true | int }}"),
    ("filter_abs_round", "{{ -3 | abs }}|{{ -2.5 | abs }}|{{ 2.5 | round }}|{{ 3.5 | round }}|{{ 2.675 | round(2) }}|{{ 2.1 | round(0, 'ceil') }}|{{ 2.9 | round(0, 'floor') }}|{{ 7 | round }}|{{ 1234.5678 | round(-2) }}"),
    ("filter_replace", "{{ s | replace('o', '0') }}|{{ s | replace('l', '', 1) }}|{{ 'aaa' | replace('a', 'bb') }}|{{ 'ab' | replace('', '-') }}"),
    ("filter_items_dictsort", "{{ d | items | list }}|{{ d | dictsort }}|{{ d | dictsort(reverse=true) }}|{{ {'b': 1, 'A': 2, 'a': 0} | dictsort }}|{{ {'b': 1, 'A': 2, 'a': 0} | dictsort(true) }}|{{ {'x': 3, 'y': 1} | dictsort(by='value') }}|{% for k, v in zz | items %}never{% endfor %}"),
    ("filter_select_reject", "{{ xs | select('odd') | list }}|{{ xs | reject('odd') | list }}|{{ [0, 1, '', 'a', none] | select | list }}|{{ xs | select('gt', 1) | list }}|{{ xs | select('in', [1, 3]) | list }}"),
    ("filter_selectattr", "{{ people | selectattr('tag') | map(attribute='name') | list }}|{{ people | rejectattr('tag') | map(attribute='name') | list }}|{{ people | selectattr('age', 'equalto', 31) | map(attribute='name') | join(',') }}|{{ people | selectattr('tag', 'defined') | list | length }}|{{ people | selectattr('tag', 'none') | list | length }}|{{ messages | selectattr('role', '==', 'user') | list | length }}"),
    ("filter_map", "{{ people | map(attribute='name') | list }}|{{ people | map(attribute='tag', default='none') | list }}|{{ words | map('upper') | list }}|{{ xs | map('string') | join('+') }}|{{ [nested, nested] | map(attribute='k.1.z') | list }}"),
    ("filter_sort_unique", "{{ xs | sort }}|{{ xs | sort(reverse=true) }}|{{ words | sort }}|{{ words | sort(case_sensitive=true) }}|{{ people | sort(attribute='age') | map(attribute='name') | list }}|{{ words | unique | list }}|{{ words | unique(case_sensitive=true) | list }}|{{ [3, 1, 3, 2, 1] | unique | list }}"),
    ("filter_reverse", "{{ xs | reverse | list }}|{{ s | reverse }}|{{ (1, 2) | reverse | list }}"),
    ("filter_batch_sum_minmax", "{{ range(7) | batch(3) | list }}|{{ range(5) | batch(2, 'x') | list }}|{{ xs | sum }}|{{ people | sum(attribute='age') }}|{{ xs | max }}|{{ xs | min }}|{{ words | max }}|{{ people | max(attribute='age') | attr('name') }}"),
    ("filter_indent", "{{ 'a\\nb\\n\\nc' | indent }}|{{ 'a\\nb' | indent(2, true) }}|{{ 'a\\n\\nb' | indent(2, blank=true) }}|{{ 'x\\ny' | indent('>> ') }}"),
    ("filter_escape_safe", "{{ '<a href=\"x\">&\\'</a>' | e }}|{{ '<b>' | escape }}|{{ '<i>' | safe }}|{{ '<x>' | safe + '<y>' }}|{{ 'p' ~ ('<q>' | safe) }}"),
    ("filter_tojson", "{{ d | tojson }}|{{ nested | tojson }}|{{ u | tojson }}|{{ 'quote \" back \\\\ tab \\t nl \\n ctl \\x01' | tojson }}|{{ [1.0, 1e20, 0.1, -0.0, 1e-5, 123.456] | tojson }}|{{ none | tojson }}|{{ t | tojson }}"),
    ("filter_tojson_options", "{{ nested | tojson(indent=2) }}|{{ d | tojson(indent=2, sort_keys=true) }}|{{ d | tojson(separators=(',', ':')) }}|{{ [] | tojson(indent=2) }}|{{ {} | tojson(indent=2) }}|{{ {'a': []} | tojson(indent=1) }}|{{ u | tojson(ensure_ascii=true) }}|{{ {1: 'int key', 'x': {'y': none}} | tojson(indent='\\t') }}"),
    ("filter_wordcount_center_truncate", "{{ 'one two  three' | wordcount }}|[{{ 'ab' | center(6) }}]|{{ 'The quick brown fox jumps' | truncate(12) }}|{{ 'The quick brown fox jumps' | truncate(12, true) }}|{{ 'short' | truncate(20) }}"),
    ("filter_format_percent", "{{ '%s-%d' | format('a', 3) }}|{{ '%05.1f|%x' | format(3.14159, 255) }}|{{ '%s and %s' % ('x', 'y') }}|{{ '%(a)s' % {'a': 1} }}|{{ '%-5s|' % 'ab' }}"),
    ("filter_attr", "{{ messages[0] | attr('role') }}|{{ d | attr('zz') }}|"),
    # ---- globals ----
    ("range_global", "{{ range(3) | list }}|{{ range(1, 4) | list }}|{{ range(10, 0, -3) | list }}|{{ range(0) | list }}"),
    ("dict_global", "{{ dict(a=1, b='x') }}|{{ dict(d, z=9) }}|{{ dict([('k', 'v')]) }}"),
    ("strftime_now", "{{ strftime_now('%Y-%m-%d %H:%M:%S') }}|{{ strftime_now('%d %B %Y') }}|{{ strftime_now('%A %b %-d') }}"),
    ("joiner_global", "{% set comma = joiner(', ') %}{% for x in xs %}{{ comma() }}{{ x }}{% endfor %}"),
    ("sandbox_allows_reading", "{{ xs.index(2) }}|{{ xs.count(3) }}|{{ messages[0].items() | list | length }}"),

    # ---- more edge cases ----
    ("ws_nested_blocks", "<s>\n{%- for m in messages %}\n  {%- if m.role == 'user' %}\n    U: {{ m.content }}\n  {%- elif m.role == 'assistant' -%}\n    A: {{ m.content }}\n  {% else %}\n    S: {{ m.content }}\n  {% endif %}\n{% endfor %}\n</s>"),
    ("ws_print_then_block", "{{ 'a' }}\n{% if true %}\n{{ 'b' }}\n{% endif %}\n{{ 'c' }}\n"),
    ("ws_inline_blocks_keep_newlines", "x{% if true %}y{% endif %}\nz{% for i in [1] %}{{ i }}{% endfor %}\n"),
    ("ws_dash_after_newline", "a\n{{- 'b' }}\n  {{- 'c' -}}\n  d"),
    ("ws_tabs_lstrip", "\t\t{% if true %}\n\tx\n\t\t{% endif %}\ny"),
    ("ws_comment_alone_on_line", "a\n    {# note #}\n    b\n"),
    ("ws_set_lines", "{% set x = 1 %}\n{% set y = 2 %}\n{{ x + y }}\n"),
    ("ws_macro_definition_lines", "{% macro m(a) %}\n  [{{ a }}]\n{% endmacro %}\n{{ m(1) }}{{ m(2) }}\n"),
    ("float_repr_edges", "{{ [1e16, 1e15, 123456789012345678.0, 0.0001, 0.00001, 1/3, 2/3, 100.0, 1e-300 * 1e-300, 5e-324] }}"),
    ("int_math_edges", "{{ 10 // 3 }} {{ -10 // 3 }} {{ 10 % -3 }} {{ -10 % 3 }} {{ 2 ** 0.5 }} {{ 7 / 7 }} {{ 3 * 1.0 }} {{ true + true }} {{ 1 - 1.5 }}"),
    ("unicode_slicing", "{{ 'a\U0001F600b'[1] }}|{{ 'a\U0001F600b' | length }}|{{ 'a\U0001F600b'[::-1] }}|{{ '\u00e9t\u00e9'[1:] }}|{{ '\u00e9' < 'z' }}|{{ '\u00e9' > 'z' }}"),
    ("tojson_astral_ascii", "{{ 'a\U0001F600' | tojson(ensure_ascii=true) }}|{{ 'a\U0001F600' | tojson }}|{{ \"it's\" | tojson }}|{{ '</script>' | tojson }}"),
    ("content_parts", "{% for m in [{'content': 'plain'}, {'content': [{'type': 'text', 'text': 'a'}, {'type': 'image'}, {'type': 'text', 'text': 'b'}]}] %}{% if m.content is string %}{{ m.content }}{% else %}{{ m.content | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') }}{% endif %};{% endfor %}"),
    ("generator_loop_length", "{% for m in messages | selectattr('role', 'equalto', 'user') %}{{ loop.index }}/{{ loop.length }} {% endfor %}"),
    ("generator_consumed_once", "{% set g = xs | select %}{{ g | list }}|{{ g | list }}|{{ xs | select | first }}|{% if xs | select('gt', 100) %}truthy{% endif %}"),
    ("namespace_in_macro", "{% macro bump(ns) %}{% set ns.n = ns.n + 1 %}{% endmacro %}{% set c = namespace(n=0) %}{{ bump(c) }}{{ bump(c) }}{{ c.n }}"),
    ("macro_default_refers_global", "{% set g = 'G' %}{% macro m(a=g ~ '!', b=a ~ '?') %}{{ a }}{{ b }}{% endmacro %}{{ m() }}|{{ m('x') }}"),
    ("macro_output_filtered", "{% macro m() %}  padded  {% endmacro %}[{{ m() | trim }}][{{ m() | length }}]"),
    ("undefined_filters", "[{{ nothing | lower }}][{{ nothing | trim }}][{{ nothing | join(',') }}][{{ nothing | list }}][{{ nothing | first }}][{% for k, v in nothing | items %}x{% endfor %}][{{ nothing | string }}][{{ nothing | default(none) is none }}]"),
    ("misc_expressions", "{{ 'a' in ['a', 'b'] }}|{{ {'a': 1}['a'] }}|{{ [1, 2, 3][-1] }}|{{ range(3) | list | tojson }}|{{ 'abc' | upper | replace('B', 'b') }}|{{ '10' < '9' }}|{{ [0.1, 0.2] | sum }}|{{ none | string | length }}|{{ 3 | string | int + 1 }}|{{ ''.join(['a', 'b']) }}|{{ 'x' if none else 'y' }}"),
    ("dunder_attributes_hidden", "[{{ s.__class__ }}][{{ d.__len__ }}][{{ xs._private }}]"),
    ("loop_cycle_and_revindex", "{% for i in range(5) %}{{ loop.cycle('odd', 'even') }}{{ loop.revindex }} {% endfor %}"),
    ("dict_literal_items", "{% for a, b in {'x': 1, 'y': [2]}.items() %}{{ a }}={{ b }};{% endfor %}|{{ {'x': 1, 'x': 2} }}|{{ {'k': none}.k is none }}"),
    ("tests_negated", "{{ s is not string }}{{ d is not mapping }}{{ n is not defined }}{{ nothing is not defined }}{{ 3 is not odd }}{{ none is not none }}"),
    ("system_message_pattern", "{% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}{% set loop_messages = messages[1:] %}{% else %}{% set loop_messages = messages %}{% endif %}{{ system_message }}|{{ loop_messages | length }}|{% for m in loop_messages %}{{ m.role[0] }}{% endfor %}"),
    ("split_chains", "{{ 'a</think>b</think>c'.split('</think>')[-1].lstrip('\\n') }}|{{ '<think>\\nx\\n</think>\\n\\ny'.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') }}|{{ 'x'.split('y') }}"),
    ("string_compare_and_bool_ops", "{{ 'b' > 'a' and 'a' < 'b' }}|{{ not (1 and 0) }}|{{ (1 or 0) and 'x' }}|{{ [] or {} or 0 or '' }}|"),
    ("items_of_nested_tools", "{% for name, spec in messages[2].tool_calls[0].function.arguments.items() %}{{ name }}:{{ spec | tojson }}{% endfor %}"),
    ("set_tuple_from_split", "{% set a, b = 'k=v'.split('=') %}{{ b }}{{ a }}"),
    ("format_filter_named", "{{ '%(x)s-%(y)d' | format(x='a', y=2) }}"),
    ("string_concat_plus_markup", "{{ ('<a>' | safe) + '<b>' }}|{{ '<b>' + ('<a>' | safe) }}|{{ ('<a>' | safe) ~ '<b>' }}|{{ ('<' | e) + ('>' | e) }}"),
    # ---- errors (the reference raises; an implementation must fail) ----
    ("error_raise_exception", "before{{ raise_exception('custom failure') }}"),
    ("error_list_append", "{% set l = [] %}{{ l.append(1) }}"),
    ("error_dict_update", "{% set m = {} %}{{ m.update({'a': 1}) }}"),
    ("error_dict_pop", "{{ d.pop('a') }}"),
    ("error_unknown_filter", "{{ 'x' | no_such_filter }}"),
    ("error_unknown_test", "{{ 'x' is no_such_test }}"),
    ("error_undefined_attr_of_undefined", "{{ nothing.at_all }}"),
    ("error_undefined_arithmetic", "{{ nothing + 1 }}"),
    ("error_undefined_call", "{{ nothing() }}"),
    ("error_str_plus_int", "{{ 'a' + 1 }}"),
    ("error_str_plus_dict", "{{ 'a' + d }}"),
    ("error_division_by_zero", "{{ 1 / 0 }}"),
    ("error_tojson_generator", "{{ xs | map('string') | tojson }}"),
    ("error_tojson_undefined", "{{ nothing | tojson }}"),
    ("error_length_generator", "{{ xs | select | length }}"),
    ("error_range_too_big", "{{ range(200000) | length }}"),
    ("error_compare_types", "{{ 1 < 'a' }}"),
    ("error_syntax_unclosed_if", "{% if true %}never closed"),
    ("error_syntax_bad_expression", "{{ 1 + }}"),
    ("error_syntax_unknown_tag", "{% frobnicate %}"),
    ("error_syntax_unclosed_print", "{{ 'x' "),
    ("error_syntax_unclosed_comment", "{# never closed"),
    ("error_syntax_unbalanced", "{{ (1 + 2 }}"),
    ("error_not_iterable", "{% for x in n %}{% endfor %}"),
    ("error_unpack_mismatch", "{% for a, b in [[1, 2, 3]] %}{% endfor %}"),
    ("error_set_attr_non_namespace", "{% set d.x = 1 %}"),
    ("error_undefined_in_condition_math", "{% if nothing > 0 %}x{% endif %}"),
    ("error_undefined_subscript", "{{ nothing[0] }}"),
    ("error_undefined_attr_chain", "{{ messages[0].nope.deeper }}"),
    ("error_markup_plus_int", "{{ ('a' | safe) + 1 }}"),
    ("error_format_missing_arg", "{{ '{0} {1}'.format('only') }}"),
    ("error_empty_separator", "{{ 'abc'.split('') }}"),
    ("error_int_neg_unary_str", "{{ -'a' }}"),
    ("error_last_of_generator", "{{ xs | select | last }}"),
    ("error_items_of_list", "{{ xs | items | list }}"),
    ("error_call_non_callable", "{{ s() }}"),
    ("error_macro_too_many_args_kw", "{% macro m(a) %}{% endmacro %}{{ m(a=1, a=2) }}"),
]


def main():
    out_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "language_cases.json")
    env = make_env()
    cases = []
    for name, source in CASES:
        case = {"name": name, "source": source}
        try:
            case["expected"] = env.from_string(source).render(**CONTEXT)
        except Exception as e:  # the reference refuses: the case expects an error
            case["error"] = f"{type(e).__name__}: {e}"
        cases.append(case)
    names = [c["name"] for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"context": CONTEXT, "fixed_now": FIXED_NOW.isoformat(), "cases": cases}, f, ensure_ascii=False,
                  indent=1)
        f.write("\n")
    n_err = sum("error" in c for c in cases)
    print(f"{len(cases)} cases ({n_err} errors) -> {out_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
