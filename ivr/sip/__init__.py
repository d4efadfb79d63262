"""SIP-lite for the IVR: a sans-IO user agent server (RFC 3261 subset over UDP).

``message`` parses and writes datagrams, ``transaction`` holds the RFC 3261 17 transaction
state machines and the timer heap, ``dialog`` one call's dialog, ``core.SipCore`` ties them
together for a transport adapter and the IVR application (see its module doc for the API).
"""

from ivr.sip.core import (
    ALLOW,
    Action,
    CallAcked,
    CallEnded,
    Dtmf,
    IncomingCall,
    SendDatagram,
    SipCore,
)
from ivr.sip.message import SIPParseError, decode_header_text, encode_header_text, make_response, parse
from ivr.sip.transaction import TimerValues

__all__ = ["ALLOW", "Action", "CallAcked", "CallEnded", "Dtmf", "IncomingCall", "SendDatagram", "SipCore",
           "SIPParseError", "TimerValues", "decode_header_text", "encode_header_text", "make_response",
           "parse"]
