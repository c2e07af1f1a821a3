import json, os, sys
OUT = '/work/main/testdata/podman-4.3.1/auto-userns'
SC = ['scenario1', 'scenario2', 'scenario3/min2000-max60000', 'scenario3/max100000',
      'scenario3/otheruser', 'scenario4-cwd']
def fm(m):
    return ', '.join(f"{x['container_id']}:{x['host_id']}:{x['size']}" for x in m) if m else '-'
def create_log(d):
    # split create-log.txt into blocks keyed by name
    blocks, cur = {}, None
    for line in open(f'{d}/create-log.txt'):
        if line.startswith('## '):
            cur = line.split()[1]; blocks[cur] = []
        elif cur:
            blocks[cur].append(line)
    return blocks
errs = []
for s in SC:
    d = f'{OUT}/{s}'
    ctrs = {c['names'][0]: c for c in json.load(open(f'{d}/containers.json'))}
    layers = {l['id']: l for l in json.load(open(f'{d}/layers.json'))}
    images = {i['id']: i for i in json.load(open(f'{d}/images.json'))}
    blocks = create_log(d)
    order = [c['names'][0] for c in json.load(open(f'{d}/containers.json'))]
    lines = [f'# {s}: every `podman create --pull=never --name NAME ARGS` in the order it was run.',
             '# Successful ones appear in containers.json in this same order; failed ones left no record.',
             '# maps are container_id:host_id:size, in the order stored in containers.json.', '']
    n = 0
    for row in open(f'{d}/.flags.tsv'):
        name, rc, cwd, args = row.rstrip('\n').split('\t')
        n += 1
        lines.append(f'{n}. {name}   exit {rc}   cwd {cwd}')
        lines.append(f'   args:   {args}')
        if rc == '0':
            c = ctrs[name]
            l = layers[c['layer']]
            img = images[c['image']]
            lines.append(f'   id:     {c["id"]}   (containers.json index {order.index(name)})')
            lines.append(f'   image:  {img["names"][0]} {img["id"]}')
            lines.append(f'   uidmap: {fm(c.get("uidmap"))}')
            lines.append(f'   gidmap: {fm(c.get("gidmap"))}')
            par = l.get('parent') or '-'
            lm = 'uidmap ' + fm(l.get('uidmap')) + ' / gidmap ' + fm(l.get('gidmap'))
            lines.append(f'   layer:  {l["id"]} parent {par}')
            lines.append(f'           layer maps: {lm}')
            if par != '-' and par in (img.get('mapped-layers') or []):
                t = layers[par]
                lines.append(f'           parent is an ID-mapped template copy of image layer {img["layer"]} '
                             f'(template record parent {t.get("parent") or "-"}, maps {fm(t.get("uidmap"))} / {fm(t.get("gidmap"))})')
        else:
            b = ''.join(blocks[name])
            st = b.split('stderr:\n', 1)[1].rstrip('\n')
            lines.append('   stderr: ' + st.replace('\n', '\n           '))
            errs.append((s, name, rc, cwd, args, st))
        lines.append('')
    open(f'{d}/order.txt', 'w').write('\n'.join(lines))
# errors.txt
E = ['# Exact podman 4.3.1 error output (stderr, verbatim) and exit codes, from the runs in README.md.',
     '# Format per entry: scenario, the command, exit code, then stderr between the ---- lines.',
     '# Note: sizes in the max-size message are printed by Go %q on a uint32, i.e. as a quoted',
     "# rune literal: 70002 -> '\\U00011172' printed as the UTF-8 character U+11172 (bytes f0 91 85 b2),",
     "# 65536 -> U+10000 (f0 90 80 80), 60000 -> '\\uea60', 61001 -> '\\uee49' (non-printable: escaped).", '']
for s, name, rc, cwd, args, st in errs:
    E += [f'## {s} / {name}', f'$ podman create --pull=never --name {name} {args}   (cwd {cwd})',
          f'exit code: {rc}', '----', st, '----', '']
# failed starts
for s in SC:
    p = f'{OUT}/{s}/start.txt'
    if not os.path.exists(p): continue
    for blk in open(p).read().split('## ')[1:]:
        head, rest = blk.split('\n', 1)
        rc = rest.split('\n', 1)[0]
        if rc != 'exit code: 0':
            st = rest.split('stderr:\n', 1)[1].rstrip('\n')
            E += [f'## {s} / {head}', f'$ {head}', rc, '----', st, '----', '']
open(f'{OUT}/errors.txt', 'w').write('\n'.join(E))
