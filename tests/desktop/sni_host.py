#!/usr/bin/python3
"""A tray host stand-in for the desktop E2E, on the session bus of
DBUS_SESSION_BUS_ADDRESS (python3-dbus and GLib, as python3-dbusmock uses).

  sni_host.py watcher LOG      own org.kde.StatusNotifierWatcher, say a host is
                               registered, append each registered item to LOG
                               as a JSON line {"sender", "path"}
  sni_host.py menu SENDER PATH print the item's menu (com.canonical.dbusmenu
                               at the item's Menu property) as JSON:
                               [{"id", "label", "enabled", "toggle_state"}]
  sni_host.py click SENDER PATH ID   send the menu item ID a "clicked" event

What a real panel (GNOME's AppIndicator extension, KDE, XFCE) does, reduced
to what the tests need: https://www.freedesktop.org/wiki/Specifications/StatusNotifierItem/
"""

import json
import sys
import time

import dbus
import dbus.service
from dbus.mainloop.glib import DBusGMainLoop

WATCHER = "org.kde.StatusNotifierWatcher"
ITEM = "org.kde.StatusNotifierItem"
MENU = "com.canonical.dbusmenu"


class Watcher(dbus.service.Object):
    def __init__(self, bus, log):
        super().__init__(bus, "/StatusNotifierWatcher")
        self.items = []
        self.log = log

    @dbus.service.method(WATCHER, in_signature="s", out_signature="", sender_keyword="sender")
    def RegisterStatusNotifierItem(self, service, sender=None):
        # Items register either their object path (libayatana-appindicator)
        # or a bus name (then the path is /StatusNotifierItem).
        if service.startswith("/"):
            owner, path = sender, service
        else:
            owner, path = service, "/StatusNotifierItem"
        self.items.append(f"{owner}{path}")
        with open(self.log, "a", encoding="utf-8") as f:
            f.write(json.dumps({"sender": owner, "path": path, "time": time.time()}) + "\n")
        self.StatusNotifierItemRegistered(f"{owner}{path}")

    @dbus.service.method(WATCHER, in_signature="s", out_signature="")
    def RegisterStatusNotifierHost(self, service):
        pass

    @dbus.service.signal(WATCHER, signature="s")
    def StatusNotifierItemRegistered(self, item):
        pass

    @dbus.service.signal(WATCHER, signature="")
    def StatusNotifierHostRegistered(self):
        pass

    @dbus.service.method(dbus.PROPERTIES_IFACE, in_signature="ss", out_signature="v")
    def Get(self, interface, prop):
        return self.GetAll(interface)[prop]

    @dbus.service.method(dbus.PROPERTIES_IFACE, in_signature="s", out_signature="a{sv}")
    def GetAll(self, interface):
        return {
            "RegisteredStatusNotifierItems": dbus.Array(self.items, signature="s"),
            "IsStatusNotifierHostRegistered": dbus.Boolean(True),
            "ProtocolVersion": dbus.Int32(0),
        }


def watcher(log):
    from gi.repository import GLib

    DBusGMainLoop(set_as_default=True)
    bus = dbus.SessionBus()
    w = Watcher(bus, log)
    _name = dbus.service.BusName(WATCHER, bus, do_not_queue=True)
    w.StatusNotifierHostRegistered()
    GLib.MainLoop().run()


def menu_proxy(bus, sender, path):
    item = bus.get_object(sender, path)
    menu_path = item.Get(ITEM, "Menu", dbus_interface=dbus.PROPERTIES_IFACE)
    return dbus.Interface(bus.get_object(sender, menu_path), MENU)


def flatten(node, out):
    ident, props, children = node
    if ident != 0:
        out.append(
            {
                "id": int(ident),
                "label": str(props.get("label", "")),
                "type": str(props.get("type", "standard")),
                "enabled": bool(props.get("enabled", True)),
                "visible": bool(props.get("visible", True)),
                "toggle_state": int(props.get("toggle-state", -1)),
            }
        )
    for c in children:
        flatten(c, out)


def menu(sender, path):
    bus = dbus.SessionBus()
    m = menu_proxy(bus, sender, path)
    _rev, layout = m.GetLayout(0, -1, dbus.Array([], signature="s"))
    out = []
    flatten(layout, out)
    print(json.dumps(out))


def click(sender, path, ident):
    bus = dbus.SessionBus()
    m = menu_proxy(bus, sender, path)
    m.Event(dbus.Int32(int(ident)), "clicked", dbus.Int32(0, variant_level=1), dbus.UInt32(int(time.time())))


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "watcher" and len(sys.argv) == 3:
        watcher(sys.argv[2])
    elif cmd == "menu" and len(sys.argv) == 4:
        menu(sys.argv[2], sys.argv[3])
    elif cmd == "click" and len(sys.argv) == 5:
        click(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)
