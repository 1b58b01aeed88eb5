package actors

import (
	"testing"
	"time"
)

func TestParseNamespaces(t *testing.T) {
	base := ChannelOptions{HistorySize: 5, HistoryTTL: time.Minute}
	got, err := ParseNamespaces("chat:history=100/5m; lobby:presence,capacity=4 ;plain:", base)
	if err != nil {
		t.Fatal(err)
	}
	ns := Namespaces{Default: base, ByName: got}
	if o := ns.For("chat:room1"); o.HistorySize != 100 || o.HistoryTTL != 5*time.Minute || o.Presence {
		t.Errorf("chat = %+v", o)
	}
	if o := ns.For("lobby:42"); !o.Presence || o.Capacity != 4 || o.HistorySize != 5 {
		t.Errorf("lobby = %+v", o)
	}
	if o := ns.For("nonamespace"); o != base {
		t.Errorf("default = %+v", o)
	}
	if o := ns.For("other:1"); o != base {
		t.Errorf("unknown namespace = %+v", o)
	}
	for _, bad := range []string{"chat", "chat:history=100", "chat:history=x/5m", "chat:capacity=-1", "chat:colour=red", ":presence"} {
		if _, err := ParseNamespaces(bad, base); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
