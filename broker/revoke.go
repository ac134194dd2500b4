package broker

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Sessions finds a device's open connection.
type Sessions interface {
	Session(id string) any
}

// DisconnectDevice closes the device's open connection, if any: used when
// the device is deleted or its token rotated, so old credentials stop
// working at once and not only at the next connect.
func (b *Broker) DisconnectDevice(s Sessions, id string) {
	if cl, ok := s.Session(id).(*mqtt.Client); ok && !cl.Closed() {
		b.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
	}
}
