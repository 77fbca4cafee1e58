package proxy

import "github.com/strait-proxy/strait/interceptor"

func newTestConn() *interceptor.Conn {
	return &interceptor.Conn{ID: 1, Listener: "bootstrap", NodeID: -1}
}
