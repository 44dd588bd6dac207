// The live pad page: CodeMirror 6 bound to a Yjs document that y-websocket keeps in sync with the
// pad's room in the console proxy (/rooms/<ID>), plus our JSON control messages (type 100): hello,
// participants, events, runs and their output, ending the pad. Bundled by esbuild at set-up.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { yCollab } from 'y-codemirror.next'
import { basicSetup } from 'codemirror'
import { EditorView } from '@codemirror/view'
import { EditorState, Compartment } from '@codemirror/state'
import { StreamLanguage } from '@codemirror/language'
import { python } from '@codemirror/lang-python'
import { javascript } from '@codemirror/lang-javascript'
import { cpp } from '@codemirror/lang-cpp'
import { java } from '@codemirror/lang-java'
import { go } from '@codemirror/lang-go'
import { rust } from '@codemirror/lang-rust'
import { php } from '@codemirror/lang-php'
import { ruby } from '@codemirror/legacy-modes/mode/ruby'
import { shell } from '@codemirror/legacy-modes/mode/shell'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'

const CONTROL = 100
const TICKET_LIFE = 40000 // ms; tickets live 60 s on the server
const MODES = {
  python3: () => python(), javascript: () => javascript(), typescript: () => javascript({ typescript: true }),
  c: () => cpp(), cpp: () => cpp(), java: () => java(), go: () => go(), rust: () => rust(),
  php: () => php(), ruby: () => StreamLanguage.define(ruby), bash: () => StreamLanguage.define(shell)
}
const COLORS = ['#30bced', '#6eeb83', '#ffbc42', '#ee6352', '#9ac2c9', '#8acb88', '#1be7ff', '#db5461']

const $ = (id) => document.getElementById(id)
const pad = document.body.dataset.pad
const state = { name: '', invisible: new URLSearchParams(location.search).has('invisible'), spare: null,
  readonly: false, owner: false, synced: false, status: 'connecting', provider: null, ytext: null }
window.padState = state // for tests and the curious: state.ytext.toString() is the text

async function ticket (name) {
  const r = await fetch(`/pads/${pad}/ticket`, {
    method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name, invisible: state.invisible })
  })
  const body = await r.json().catch(() => ({}))
  return { status: r.status, body }
}

// y-websocket opens every (re)connection with `new WebSocketPolyfill(url, protocols)`, synchronously:
// keep one fresh ticket ready, spend it there, fetch the next one at once.
async function refill () {
  try {
    const { status, body } = await ticket(state.name)
    if (status === 200) state.spare = { ticket: body.ticket, at: Date.now() }
  } catch (e) { /* the proxy is down: the next attempt refills */ }
}
class TicketSocket extends WebSocket {
  constructor (url) {
    const spare = state.spare && Date.now() - state.spare.at < TICKET_LIFE ? state.spare.ticket : 'none'
    state.spare = null
    super(url, ['ticket.' + spare, 'y'])
    refill()
  }
}

function send (obj) {
  const enc = encoding.createEncoder()
  encoding.writeVarUint(enc, CONTROL)
  encoding.writeVarString(enc, JSON.stringify(obj))
  const ws = state.provider && state.provider.ws
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(encoding.toUint8Array(enc))
}

function item (list, text) {
  const li = document.createElement('li')
  li.textContent = text
  $(list).appendChild(li)
  return li
}

const editable = new Compartment()
const language = new Compartment()
let view = null

function setReadonly (readonly) {
  state.readonly = readonly
  if (view) {
    view.dispatch({ effects: editable.reconfigure([EditorState.readOnly.of(readonly), EditorView.editable.of(!readonly)]) })
  }
  $('run').disabled = readonly
  if (readonly) $('end').classList.add('hidden')
}

function onControl (msg) {
  if (msg.op === 'hello') {
    state.owner = msg.you.role === 'owner'
    $('title').textContent = msg.pad.title
    $('language').textContent = ' · ' + msg.pad.language
    const mode = MODES[msg.pad.language]
    view.dispatch({ effects: language.reconfigure(mode ? mode() : []) })
    if (state.owner) {
      $('owner-notes').classList.remove('hidden')
      if (!msg.pad.ended) $('end').classList.remove('hidden')
      if (document.activeElement !== $('notes')) $('notes').value = msg.pad.notes || ''
    }
    setReadonly(msg.you.readonly)
  } else if (msg.op === 'participants') {
    $('participants').replaceChildren()
    for (const p of msg.people) item('participants', `${p.name} (${p.role})`)
  } else if (msg.op === 'event') {
    item('events', msg.event.message)
  } else if (msg.op === 'run-started') {
    $('output').textContent = `${msg.by} is running the code…`
    $('run').disabled = true
  } else if (msg.op === 'run-output') {
    const tail = msg.error ? `\n[${msg.error}]` : `\n[exit ${msg.exit_status}${msg.timed_out ? ', timed out' : ''}, ${msg.time} s, run by ${msg.by}]`
    $('output').textContent = msg.output + tail
    $('output').dataset.done = String(Date.now())
    $('run').disabled = state.readonly
  } else if (msg.op === 'run-refused') {
    $('output').textContent = msg.message
  } else if (msg.op === 'ended') {
    item('events', 'The pad has ended: it is read-only now.')
    setReadonly(true)
  } else if (msg.op === 'notes-saved') {
    $('notes-status').textContent = 'saved'
  }
}

function start (name) {
  state.name = name
  $('join').classList.add('hidden')
  const doc = new Y.Doc()
  const ytext = doc.getText('contents')
  state.ytext = ytext
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws'
  const provider = new WebsocketProvider(`${scheme}://${location.host}/rooms`, pad, doc,
    { WebSocketPolyfill: TicketSocket, maxBackoffTime: 1000 })
  state.provider = provider
  provider.messageHandlers[CONTROL] = (encoder, decoder) => onControl(JSON.parse(decoding.readVarString(decoder)))
  const color = COLORS[Math.abs(hash(name)) % COLORS.length]
  if (!state.invisible) provider.awareness.setLocalStateField('user', { name, color, colorLight: color + '33' })
  provider.on('status', (e) => { state.status = e.status; $('status').textContent = e.status })
  provider.on('sync', (synced) => { state.synced = synced })
  const undoManager = new Y.UndoManager(ytext)
  view = new EditorView({
    parent: $('editor'),
    state: EditorState.create({
      doc: ytext.toString(),
      extensions: [basicSetup, language.of([]), editable.of(EditorState.readOnly.of(true)),
        yCollab(ytext, provider.awareness, { undoManager })]
    })
  })
  state.view = view
}

function hash (text) {
  let h = 0
  for (const c of text) h = (h * 31 + c.codePointAt(0)) | 0
  return h
}

$('run').addEventListener('click', () => send({ op: 'run', stdin: $('stdin').value }))
$('end').addEventListener('click', () => {
  if (confirm('End this pad? It becomes read-only for everyone.')) send({ op: 'end' })
})
$('save-notes').addEventListener('click', () => { $('notes-status').textContent = 'saving…'; send({ op: 'notes', notes: $('notes').value }) })
$('join-form').addEventListener('submit', async (e) => {
  e.preventDefault()
  const name = $('join-name').value.trim()
  const { status, body } = await ticket(name)
  if (status !== 200) { $('join-message').textContent = body.message || 'You cannot join this pad.'; return }
  state.spare = { ticket: body.ticket, at: Date.now() }
  start(body.name)
})

// Signed in (the pads cookie)? Then no name is asked; a guest gives one; a private pad refuses guests.
ticket('').then(({ status, body }) => {
  if (status === 200) {
    state.spare = { ticket: body.ticket, at: Date.now() }
    start(body.name)
  } else if (status === 400) {
    $('join').classList.remove('hidden')
    $('status').textContent = 'not joined'
  } else {
    $('join').classList.remove('hidden')
    $('join-form').classList.add('hidden')
    $('join-message').textContent = body.message || 'You cannot open this pad.'
    $('status').textContent = 'refused'
  }
})
