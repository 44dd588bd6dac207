// Playback of a pad: its stored updates (GET /pads/<ID>/history, signed-in users who see the pad)
// replayed as text deltas along a timeline, at 1x, 4x or 16x, with joins and runs marked on it.
const $ = (id) => document.getElementById(id)
const pad = document.body.dataset.pad
const MAX_GAP = 2000 // ms: a long pause plays as at most this (before the speed-up)
const state = { updates: [], texts: [''], times: [], index: 0, playing: false, timer: null, loaded: false }
window.playback = state

function apply (text, change) {
  let out = ''
  let pos = 0
  for (const step of change) {
    if (step.retain !== undefined) { out += text.slice(pos, pos + step.retain); pos += step.retain } else if (step.delete !== undefined) pos += step.delete
    else if (step.insert !== undefined) out += step.insert
  }
  return out + text.slice(pos)
}

function show (index) {
  state.index = index
  $('timeline').value = String(index)
  $('replay').textContent = state.texts[index]
  $('position').textContent = `${index} / ${state.updates.length}`
  $('clock').textContent = index > 0 ? `${state.updates[index - 1].time} · ${state.updates[index - 1].author || 'initial contents'}` : ''
}

function step () {
  if (!state.playing) return
  if (state.index >= state.updates.length) { pause(); return }
  show(state.index + 1)
  if (state.index >= state.updates.length) { pause(); return }
  const gap = Math.min(MAX_GAP, state.times[state.index] - state.times[state.index - 1])
  state.timer = setTimeout(step, Math.max(0, gap) / Number($('speed').value))
}

function play () {
  if (state.index >= state.updates.length) show(0)
  state.playing = true
  $('play').textContent = 'Pause'
  step()
}

function pause () {
  state.playing = false
  clearTimeout(state.timer)
  $('play').textContent = 'Play'
}

function mark (event) {
  if (!['joined', 'left', 'ran', 'ended'].includes(event.kind)) return
  const at = Date.parse(event.created_at)
  let index = state.times.findIndex((t) => t >= at)
  if (index < 0) index = state.updates.length
  const span = document.createElement('span')
  span.style.left = `${state.updates.length ? (100 * index) / state.updates.length : 0}%`
  span.textContent = { joined: '▲', left: '▽', ran: '▶', ended: '■' }[event.kind]
  span.title = event.message
  span.dataset.kind = event.kind
  $('marks').appendChild(span)
}

async function load () {
  let after = 0
  for (;;) {
    const r = await fetch(`/pads/${pad}/history?after=${after}`, { credentials: 'same-origin' })
    const body = await r.json()
    if (r.status !== 200) { $('playback-status').textContent = body.message || 'Cannot load this pad.'; return }
    for (const u of body.updates) {
      state.updates.push(u)
      state.times.push(Date.parse(u.time))
      state.texts.push(apply(state.texts[state.texts.length - 1], u.change))
    }
    after = body.last_seq
    if (!body.more) { state.events = body.events; state.final = body.text; break }
  }
  $('timeline').max = String(state.updates.length)
  for (const e of state.events) mark(e)
  show(0)
  state.loaded = true
  $('playback-status').textContent = `${state.updates.length} changes`
}

$('play').addEventListener('click', () => (state.playing ? pause() : play()))
$('timeline').addEventListener('input', () => { pause(); show(Number($('timeline').value)) })
load()
