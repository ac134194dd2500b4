// MQTT.js against the hub: a client we did not write, over every transport.
// Run by cmd/telehub/app's TestMQTTJSInterop, which starts the hub, creates the
// device and passes everything in the environment variable TELEHUB_INTEROP:
//
//   {"device": {"id": "...", "token": "..."}, "ca": "/path/ca.pem",
//    "tsBase": 1700000000000,
//    "transports": [{"name": "tcp", "url": "mqtt://127.0.0.1:1883"}, ...]}
//
// For each transport and each of MQTT 3.1.1 and 5 it connects as the device,
// subscribes to devices/{id}/echo/# (and, refused, to every device's
// telemetry), publishes three readings (QoS 1, with topic aliases from the
// client under MQTT 5) and three messages to devices/{id}/echo/ping, and
// waits for those to come back (with topic aliases from the broker under
// MQTT 5). Under MQTT 5 it also publishes to another
// device's topic, which the hub must refuse with reason code 135 (not
// authorized). It prints one JSON object with the results and exits 0, or
// prints the error and exits 1.
'use strict'

const fs = require('node:fs')
const mqtt = require('mqtt')

const cfg = JSON.parse(process.env.TELEHUB_INTEROP || '{}')
let seq = 0

function waitFor (cond, ms, what) {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + ms
    const tick = () => {
      if (cond()) return resolve()
      if (Date.now() > deadline) return reject(new Error('timed out waiting for ' + what))
      setTimeout(tick, 10)
    }
    tick()
  })
}

async function run (transport, version) {
  const { id, token } = cfg.device
  const opts = {
    protocolVersion: version,
    clientId: `${id}-${transport.name}-v${version}`,
    username: id,
    password: token,
    reconnectPeriod: 0,
    connectTimeout: 5000,
    clean: true
  }
  if (cfg.ca) {
    opts.ca = fs.readFileSync(cfg.ca)
    opts.rejectUnauthorized = true
  }
  if (version === 5) {
    opts.properties = { topicAliasMaximum: 16 } // the broker may alias topics to us
    opts.autoUseTopicAlias = true // and we alias topics to the broker
  }
  const client = await mqtt.connectAsync(transport.url, opts)
  const received = []
  client.on('message', (topic, payload, packet) => received.push({
    topic,
    payload: payload.toString(),
    alias: (packet.properties && packet.properties.topicAlias) || 0
  }))
  try {
    step += ': subscribe'
    const granted = await client.subscribeAsync(`devices/${id}/echo/#`, { qos: 1 })
    step += ': foreign'
    // Refused: MQTT.js rejects a SUBACK failure, with the codes in the packet.
    const foreign = await client.subscribeAsync('devices/+/telemetry', { qos: 1 }).then(
      (granted) => granted.map((g) => g.qos),
      (err) => (err.packet && err.packet.granted) || [err.code])
    step += ': telemetry'
    for (let i = 0; i < 3; i++) {
      const reading = { ts: cfg.tsBase + seq++, via: transport.name, mqtt: version, i }
      await client.publishAsync(`devices/${id}/telemetry`, JSON.stringify(reading), { qos: 1 })
    }
    step += ': echo publish'
    for (let i = 0; i < 3; i++) {
      await client.publishAsync(`devices/${id}/echo/ping`, `ping-${i}`, { qos: 1 })
    }
    step += ': echo receive'
    await waitFor(() => received.length >= 3, 5000, 'the echoed messages')
    step += ': refused'
    let refused = null
    if (version === 5) {
      try {
        await client.publishAsync('devices/someone-else/telemetry', '{"x":1}', { qos: 1 })
        refused = 0
      } catch (err) {
        refused = err.code
      }
    }
    return {
      transport: transport.name,
      version,
      granted: granted.map((g) => g.qos),
      foreign,
      received,
      refused
    }
  } finally {
    await client.endAsync()
  }
}

let step = 'starting'

async function main () {
  const results = []
  for (const transport of cfg.transports) {
    for (const version of [4, 5]) {
      step = `${transport.name} MQTT ${version}`
      results.push(await run(transport, version))
    }
  }
  step = 'done'
  process.stdout.write(JSON.stringify({ mqttjs: require('mqtt/package.json').version, results }) + '\n')
}

// Node exits quietly when a promise can never settle; say where it stalled.
process.on('beforeExit', () => {
  if (step !== 'done') {
    process.stderr.write(`mqtt-interop: stalled at ${step}\n`)
    process.exit(1)
  }
})

main().catch((err) => {
  process.stderr.write(`mqtt-interop: ${err && err.stack ? err.stack : err}\n`)
  process.exit(1)
})
