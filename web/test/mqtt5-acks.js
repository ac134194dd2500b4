// MQTT.js publishes with MQTT 5 properties (user properties, content type,
// response topic, correlation data, expiry) at QoS 1 and 2 to the broker
// at TELEHUB_MQTT_URL, anonymously, and reports for each QoS whether the
// publish completed. MQTT.js fails a publish whose acknowledgement carries
// a reason code that packet may not have, as mochi's did when it copied
// the publish's properties into it. Run by broker's TestMQTTJSAcks; prints
// one JSON object, e.g. {"1":"ok","2":"ok"}, and exits 0, or exits 1.
'use strict'

const mqtt = require('mqtt')

const props = {
  userProperties: { trace: 'abc' },
  contentType: 'application/json',
  responseTopic: 'site/replies',
  correlationData: Buffer.from('corr'),
  messageExpiryInterval: 300,
  payloadFormatIndicator: true
}

function within (ms, p) {
  let timer
  const t = new Promise((resolve, reject) => { timer = setTimeout(() => reject(new Error('no acknowledgement within ' + ms + ' ms')), ms) })
  return Promise.race([p, t]).finally(() => clearTimeout(timer))
}

async function main () {
  const c = await mqtt.connectAsync(process.env.TELEHUB_MQTT_URL, {
    protocolVersion: 5, clientId: 'js-acks', reconnectPeriod: 0, connectTimeout: 5000
  })
  const out = {}
  for (const qos of [1, 2]) {
    try {
      await within(5000, c.publishAsync('site/js/acks', '{"v":1}', { qos, properties: props }))
      out[qos] = 'ok'
    } catch (err) {
      out[qos] = String(err.message)
    }
  }
  console.log(JSON.stringify(out))
  c.end(true)
}

main().catch(err => { console.error(err); process.exit(1) })
