// fieldstation_analog: the 12 analog inputs of an Arduino Due, served over TCP to fieldstation's
// `arduino` driver (agent/src/fieldstation/sensors/arduino.py).
//
// Hardware: Arduino Due + Ethernet shield (W5100, W5500; the Ethernet library detects which).
// Library:  Ethernet >= 2.0 (Arduino IDE: Tools > Manage Libraries > "Ethernet" by Arduino).
//
// Protocol: a client connects to PORT and sends one byte (any value). For every byte received the sketch
// reads A0..A11 at 12 bits and writes one frame of 24 bytes: channel 0 (A0) first, each value as two bytes,
// HIGH BYTE FIRST (big-endian). A value is 0..4095; volts = value / 4096 * VREF (about 3.3 V on a Due; the
// lab's board measured 3.25 V). The client may send more bytes on the same connection, or close it.
//
// Edit the MAC, IP address and port below before flashing (see agent/arduino/README.md).

#include <SPI.h>
#include <Ethernet.h>

// A locally administered MAC address (second hex digit 2, 6, A or E): unique on the lab network.
byte MAC[] = {0x02, 0x46, 0x53, 0x00, 0x00, 0x01};
// A fixed address, so the agent's config.py can name it. Set USE_DHCP to 1 to ask a DHCP server instead.
IPAddress IP(192, 168, 1, 177);
#define USE_DHCP 0
// Must match the driver's `port` option (its default is 5000).
const uint16_t PORT = 5000;
// The shield's chip-select pin: 10 on the official shields.
const uint8_t ETHERNET_CS = 10;

const uint8_t CHANNELS = 12;
const uint8_t PINS[CHANNELS] = {A0, A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11};

EthernetServer server(PORT);

void setup() {
  Serial.begin(115200);
  analogReadResolution(12);  // the Due's ADC is 12-bit; the default of 10 bits would lose two
  Ethernet.init(ETHERNET_CS);
#if USE_DHCP
  if (Ethernet.begin(MAC) == 0) {
    Serial.println("DHCP failed, using the fixed address");
    Ethernet.begin(MAC, IP);
  }
#else
  Ethernet.begin(MAC, IP);
#endif
  if (Ethernet.hardwareStatus() == EthernetNoHardware) {
    Serial.println("No Ethernet shield found: check the shield and ETHERNET_CS");
  }
  server.begin();
  Serial.print("fieldstation_analog listening on ");
  Serial.print(Ethernet.localIP());
  Serial.print(":");
  Serial.println(PORT);
}

// Read every channel and write one 24-byte frame, high byte first, in a single write (one TCP segment);
// the driver copes with a frame split over several segments anyway.
void sendFrame(EthernetClient &client) {
  uint8_t frame[2 * CHANNELS];
  for (uint8_t ch = 0; ch < CHANNELS; ch++) {
    uint16_t raw = analogRead(PINS[ch]);  // 0..4095
    frame[2 * ch] = (raw >> 8) & 0xFF;    // high byte first
    frame[2 * ch + 1] = raw & 0xFF;
  }
  client.write(frame, sizeof frame);
}

void loop() {
  // available() returns a connection with unread bytes, and closes connections the client has closed.
  EthernetClient client = server.available();
  if (client) {
    while (client.available() > 0) {
      client.read();  // the request byte: its value does not matter
      sendFrame(client);
    }
  }
#if USE_DHCP
  Ethernet.maintain();  // renews the DHCP lease
#endif
}
