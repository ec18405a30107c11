package grpcnet

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/dtx-dev/dtx/api/dtxv1"
	"github.com/dtx-dev/dtx/twopc"
)

// BenchmarkMessageCodec converts a PREPARE carrying a purchase-sized
// operation to its wire form and back, as one Deliver does per message:
// ToProto, proto.Marshal, proto.Unmarshal, FromProto.
func BenchmarkMessageCodec(b *testing.B) {
	m := twopc.Message{Type: twopc.MsgPrepare, From: twopc.CoordinatorID, To: "inventory", Tx: "b17-123456",
		Epoch: 3, Op: make([]byte, 64), TS: 3<<40 | 99, Attempt: 1}
	b.ReportAllocs()
	for b.Loop() {
		data, err := proto.Marshal(ToProto(&m))
		if err != nil {
			b.Fatal(err)
		}
		var p dtxv1.Message
		if err := proto.Unmarshal(data, &p); err != nil {
			b.Fatal(err)
		}
		if _, err := FromProto(&p); err != nil {
			b.Fatal(err)
		}
	}
}
