// Package control owns what the hub asks of devices and what they answer:
// commands (submitted through the API, queued, sent on the device's command
// topic, answered on its result topic or MQTT 5 response topic, expired,
// stored by a CommandStore), the command schemas that check their
// parameters per device type, and each device's desired and reported state
// with the delta between them. It knows devices only through the small
// DeviceLookup interface and reaches them through CommandSender and
// DesiredPublisher, which the broker implements; the topic layout is
// devices/topics'.
package control
