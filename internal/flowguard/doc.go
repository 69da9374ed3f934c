// Package flowguard keeps a gRPC server from holding answers for clients that do not read them,
// the failure that took down the system gather replaces: it wrote results on a blocking socket
// with no timeout to clients that had stopped reading.
//
// grpc-go gives a handler no way to abandon a message it has sent. SendMsg hands the encoded
// message to the transport, which queues it whole and writes it as the client's HTTP/2
// flow-control window allows; a unary answer is queued after the handler has returned. A client
// that grants no window (or whose socket takes no bytes) therefore pins every byte of its
// answers in the server until the client itself resets the stream or the connection ends, and a
// server cannot reset a stream from a handler. Closing the connection is the one thing that
// releases them.
//
// A Guard sees every connection of one server through its transport credentials (above TLS, so
// it reads plaintext HTTP/2) and follows, from the frame headers alone, the send windows the
// client grants (SETTINGS, WINDOW_UPDATE) and uses up (DATA) on the connection and on every
// stream the server has begun answering. A connection on which such a stream, or the connection
// itself, has had no window for Config.SendTimeout is closed, and so is one whose socket write
// blocks for as long (a write deadline on every write). Every close is counted and logged.
//
// Handlers use Conn.DataWritten and Conn.AwaitWritten to hold what an answer holds (an admission
// slot, say) until its bytes have left the process, or have been dropped with the connection.
//
// The guard closes a whole connection, not just the stream that stalled, because nothing else
// frees the stalled stream's queued bytes; a client that multiplexes many calls on one connection
// loses them all when it leaves one answer unread for SendTimeout. A stream whose window happens
// to be used up exactly while the server has nothing more to send counts as waiting too; on a
// client that reads, that lasts no longer than the client's next read.
package flowguard
