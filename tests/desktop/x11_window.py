#!/usr/bin/python3
"""The app's top-level X11 window, as a window manager sees it (libX11
through ctypes; no other package), for the desktop E2E on Xvfb.

  x11_window.py find PID      print the ids of PID's mapped-or-not top-level
                              windows that have a WM_PROTOCOLS property
  x11_window.py state XID     print "viewable" or "hidden"
  x11_window.py close XID     ask the window to close, as the close button of
                              a window manager does (WM_DELETE_WINDOW)
"""

import ctypes
import ctypes.util
import sys

x = ctypes.cdll.LoadLibrary(ctypes.util.find_library("X11") or "libX11.so.6")

Window = ctypes.c_ulong
Atom = ctypes.c_ulong


class XClientMessageEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("serial", ctypes.c_ulong),
        ("send_event", ctypes.c_int),
        ("display", ctypes.c_void_p),
        ("window", Window),
        ("message_type", Atom),
        ("format", ctypes.c_int),
        ("l", ctypes.c_long * 5),
    ]


class XEvent(ctypes.Union):
    _fields_ = [("xclient", XClientMessageEvent), ("pad", ctypes.c_long * 24)]


class XWindowAttributes(ctypes.Structure):
    _fields_ = [
        ("x", ctypes.c_int), ("y", ctypes.c_int), ("width", ctypes.c_int), ("height", ctypes.c_int),
        ("border_width", ctypes.c_int), ("depth", ctypes.c_int), ("visual", ctypes.c_void_p),
        ("root", Window), ("c_class", ctypes.c_int), ("bit_gravity", ctypes.c_int),
        ("win_gravity", ctypes.c_int), ("backing_store", ctypes.c_int),
        ("backing_planes", ctypes.c_ulong), ("backing_pixel", ctypes.c_ulong),
        ("save_under", ctypes.c_int), ("colormap", ctypes.c_ulong),
        ("map_installed", ctypes.c_int), ("map_state", ctypes.c_int),
        ("all_event_masks", ctypes.c_long), ("your_event_mask", ctypes.c_long),
        ("do_not_propagate_mask", ctypes.c_long), ("override_redirect", ctypes.c_int),
        ("screen", ctypes.c_void_p),
    ]


x.XOpenDisplay.restype = ctypes.c_void_p
x.XOpenDisplay.argtypes = [ctypes.c_char_p]
x.XDefaultRootWindow.restype = Window
x.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
x.XInternAtom.restype = Atom
x.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
x.XQueryTree.argtypes = [ctypes.c_void_p, Window, ctypes.POINTER(Window), ctypes.POINTER(Window),
                         ctypes.POINTER(ctypes.POINTER(Window)), ctypes.POINTER(ctypes.c_uint)]
x.XGetWindowProperty.argtypes = [ctypes.c_void_p, Window, Atom, ctypes.c_long, ctypes.c_long, ctypes.c_int,
                                 Atom, ctypes.POINTER(Atom), ctypes.POINTER(ctypes.c_int),
                                 ctypes.POINTER(ctypes.c_ulong), ctypes.POINTER(ctypes.c_ulong),
                                 ctypes.POINTER(ctypes.c_void_p)]
x.XSendEvent.argtypes = [ctypes.c_void_p, Window, ctypes.c_int, ctypes.c_long, ctypes.POINTER(XEvent)]
x.XGetWindowAttributes.argtypes = [ctypes.c_void_p, Window, ctypes.POINTER(XWindowAttributes)]
x.XFlush.argtypes = [ctypes.c_void_p]
x.XFree.argtypes = [ctypes.c_void_p]

d = x.XOpenDisplay(None)
if not d:
    sys.exit("x11_window.py: cannot open the display (DISPLAY unset?)")


def atom(name):
    return x.XInternAtom(d, name.encode(), 0)


def cardinal(win, name):
    actual, fmt, n, after, data = Atom(), ctypes.c_int(), ctypes.c_ulong(), ctypes.c_ulong(), ctypes.c_void_p()
    rc = x.XGetWindowProperty(d, win, atom(name), 0, 1, 0, 0, ctypes.byref(actual), ctypes.byref(fmt),
                              ctypes.byref(n), ctypes.byref(after), ctypes.byref(data))
    if rc != 0 or not data.value or n.value == 0:
        return None
    v = ctypes.cast(data, ctypes.POINTER(ctypes.c_ulong))[0]
    x.XFree(data)
    return v


def has(win, name):
    actual, fmt, n, after, data = Atom(), ctypes.c_int(), ctypes.c_ulong(), ctypes.c_ulong(), ctypes.c_void_p()
    rc = x.XGetWindowProperty(d, win, atom(name), 0, 16, 0, 0, ctypes.byref(actual), ctypes.byref(fmt),
                              ctypes.byref(n), ctypes.byref(after), ctypes.byref(data))
    if data.value:
        x.XFree(data)
    return rc == 0 and actual.value != 0


def children(win):
    root, parent, kids, n = Window(), Window(), ctypes.POINTER(Window)(), ctypes.c_uint()
    if not x.XQueryTree(d, win, ctypes.byref(root), ctypes.byref(parent), ctypes.byref(kids), ctypes.byref(n)):
        return []
    out = [kids[i] for i in range(n.value)]
    if kids:
        x.XFree(kids)
    return out


def find(pid):
    """PID's top-level windows with WM_PROTOCOLS, the largest first (the
    main window; GTK also keeps small helper windows)."""
    out = []
    for w in children(x.XDefaultRootWindow(d)):
        if cardinal(w, "_NET_WM_PID") == pid and has(w, "WM_PROTOCOLS"):
            a = XWindowAttributes()
            x.XGetWindowAttributes(d, w, ctypes.byref(a))
            out.append((a.width * a.height, w))
    return [w for _, w in sorted(out, reverse=True)]


def state(win):
    a = XWindowAttributes()
    x.XGetWindowAttributes(d, win, ctypes.byref(a))
    return "viewable" if a.map_state == 2 else "hidden"


def close(win):
    ev = XEvent()
    ev.xclient.type = 33  # ClientMessage
    ev.xclient.window = win
    ev.xclient.message_type = atom("WM_PROTOCOLS")
    ev.xclient.format = 32
    ev.xclient.l[0] = atom("WM_DELETE_WINDOW")
    ev.xclient.l[1] = 0  # CurrentTime
    x.XSendEvent(d, win, 0, 0, ctypes.byref(ev))
    x.XFlush(d)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "find":
        print(" ".join(str(w) for w in find(int(sys.argv[2]))))
    elif len(sys.argv) == 3 and sys.argv[1] == "state":
        print(state(int(sys.argv[2])))
    elif len(sys.argv) == 3 and sys.argv[1] == "close":
        close(int(sys.argv[2]))
    else:
        sys.exit(__doc__)
