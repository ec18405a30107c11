package grpcnet

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/dtx-dev/dtx/api/dtxv1"
	"github.com/dtx-dev/dtx/twopc"
)

// fill sets every field reachable from v to a non-zero value derived from
// its path, so that a field the mapping forgets comes back zero.
func fill(t *testing.T, v reflect.Value, path string) {
	t.Helper()
	switch v.Kind() {
	case reflect.String:
		v.SetString("v-" + path)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
		v.SetUint(uint64(7 + len(path)))
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Int:
		v.SetInt(int64(7 + len(path)))
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := range 2 {
			fill(t, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.Struct:
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			fill(t, v.Field(i), path+"."+f.Name)
		}
	default:
		t.Fatalf("%s: fill does not know kind %s; teach it, and map the field in convert.go", path, v.Kind())
	}
}

// TestMessageRoundTrip fails when a field is added to twopc.Message (or to
// a struct inside it) and not mapped to the wire form: every field is
// filled through reflection, sent through ToProto, proto.Marshal,
// proto.Unmarshal and FromProto, and must come back equal.
func TestMessageRoundTrip(t *testing.T) {
	var m twopc.Message
	fill(t, reflect.ValueOf(&m).Elem(), "Message")
	m.Type = twopc.MsgPrepare // fields the receiver validates
	m.Vote = twopc.VoteNo
	data, err := proto.Marshal(ToProto(&m))
	if err != nil {
		t.Fatal(err)
	}
	var p dtxv1.Message
	if err := proto.Unmarshal(data, &p); err != nil {
		t.Fatal(err)
	}
	got, err := FromProto(&p)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("round trip lost a field (map it in ToProto and FromProto and in dtx.proto):\n got %+v\nwant %+v", got, m)
	}
}

// TestMessageFieldCount is the plain version of the check above: the wire
// message has one field per twopc.Message field.
func TestMessageFieldCount(t *testing.T) {
	goFields := reflect.TypeOf(twopc.Message{}).NumField()
	wire := (&dtxv1.Message{}).ProtoReflect().Descriptor().Fields().Len()
	if goFields != wire {
		t.Fatalf("twopc.Message has %d fields, dtx.v1.Message %d: map the new field in api/dtxv1/dtx.proto and convert.go", goFields, wire)
	}
	goWait := reflect.TypeOf(twopc.Wait{}).NumField()
	wireWait := (&dtxv1.Wait{}).ProtoReflect().Descriptor().Fields().Len()
	if goWait != wireWait {
		t.Fatalf("twopc.Wait has %d fields, dtx.v1.Wait %d", goWait, wireWait)
	}
}

// TestEnumsMatch checks that the wire enums name every message type and
// vote twopc defines, with the same number.
func TestEnumsMatch(t *testing.T) {
	for i := 1; i < 256; i++ {
		mt := twopc.MsgType(i)
		if name := mt.String(); name != fmt.Sprintf("MsgType(%d)", i) {
			want := "MSG_TYPE_" + strings.ReplaceAll(name, "-", "_")
			if got := dtxv1.MsgType_name[int32(i)]; got != want {
				t.Errorf("twopc.%s = %d: wire enum has %q there, want %q", name, i, got, want)
			}
		}
		v := twopc.Vote(i)
		if name := v.String(); name != fmt.Sprintf("Vote(%d)", i) {
			if got := dtxv1.Vote_name[int32(i)]; got != "VOTE_"+name {
				t.Errorf("twopc vote %s = %d: wire enum has %q there", name, i, got)
			}
		}
	}
}

func TestFromProtoRejects(t *testing.T) {
	ok := &dtxv1.Message{Type: dtxv1.MsgType_MSG_TYPE_PREPARE, From: "coordinator", To: "inventory", Tx: "t1"}
	if _, err := FromProto(ok); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*dtxv1.Message){
		"no type":      func(p *dtxv1.Message) { p.Type = 0 },
		"unknown type": func(p *dtxv1.Message) { p.Type = 200 },
		"bad vote":     func(p *dtxv1.Message) { p.Vote = 99 },
		"no from":      func(p *dtxv1.Message) { p.From = "" },
		"long tx":      func(p *dtxv1.Message) { p.Tx = strings.Repeat("x", twopc.MaxTxIDBytes+1) },
		"no tx":        func(p *dtxv1.Message) { p.Tx = "" },
		"control tx":   func(p *dtxv1.Message) { p.Tx = "t\x001" },
		"bad utf8 tx":  func(p *dtxv1.Message) { p.Tx = "t\xff" },
		"long from":    func(p *dtxv1.Message) { p.From = strings.Repeat("c", maxIDBytes+1) },
		"waits tx":     func(p *dtxv1.Message) { p.Type = dtxv1.MsgType_MSG_TYPE_WAITS },
		"empty vote":   func(p *dtxv1.Message) { p.Type = dtxv1.MsgType_MSG_TYPE_VOTE },
		"bad edge": func(p *dtxv1.Message) {
			p.Type, p.Tx = dtxv1.MsgType_MSG_TYPE_WAITS, ""
			p.Waits = []*dtxv1.Wait{{Waiter: "t1", Holder: ""}}
		},
	} {
		p := proto.Clone(ok).(*dtxv1.Message)
		mut(p)
		if _, err := FromProto(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
